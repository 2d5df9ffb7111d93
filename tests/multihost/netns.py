"""Build and remove the network of the multi-host tests: namespaces, veths, a bridge.

    namespace <run>-switch: bridge br0 with no address
      port v-<host>  <-- veth pair -->  eth0 in namespace <run>-<host>, 10.213.7.N/24

where <run> is meshmh-<pid of the test run>-<network number>.

Every host namespace has `lo` up and one address on SUBNET, which exists only
inside these namespaces. The bridge sits in its own namespace too, so the
root namespace gets no address and no route, and no packet from these hosts
can leave them. Namespace names carry the pid of the test run, so that a
later run can find and remove what a crashed run left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

PREFIX = "meshmh"
SUBNET = "10.213.7"
PREFIX_LENGTH = 24
BRIDGE = "br0"
HOST_INTERFACE = "eth0"
# Linux limits interface names to 15 bytes (IFNAMSIZ - 1).
MAX_INTERFACE_NAME = 15
SKIP_REASON = "needs root to create network namespaces; CI runs as root"

_OWN_NAMESPACE = re.compile(rf"^{PREFIX}-(\d+)-")


def missing_requirement() -> str | None:
    """Return why the topology cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return SKIP_REASON
    if shutil.which("ip") is None:
        return "needs the `ip` command of iproute2 to create network namespaces"
    return None


def ip(*args: str) -> str:
    """Run one `ip` command and return its output.

    Raises RuntimeError with the command's stderr when it fails.
    """
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, check=False, timeout=10
    )
    if result.returncode != 0:
        command = " ".join(["ip", *args])
        error = result.stderr.strip()
        msg = f"`{command}` failed with status {result.returncode}: {error}"
        raise RuntimeError(msg)
    return result.stdout


def list_namespaces() -> list[str]:
    """Return the names of the named network namespaces (`ip netns list`)."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line]


def namespace_pids(namespace: str) -> list[int]:
    return [int(pid) for pid in ip("netns", "pids", namespace).split()]


def delete_namespace(namespace: str) -> None:
    """Kill the processes left in a namespace of this suite, then delete it."""
    for pid in namespace_pids(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    ip("netns", "delete", namespace)


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces of this suite whose test run is no longer alive."""
    removed: list[str] = []
    for namespace in list_namespaces():
        match = _OWN_NAMESPACE.match(namespace)
        if match is None or _alive(int(match.group(1))):
            continue
        delete_namespace(namespace)
        removed.append(namespace)
    if removed:
        logger.warning("removed namespaces of a crashed run: %s", ", ".join(removed))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Host:
    """One namespace on the bridge, as one container is on a Compose network."""

    name: str
    namespace: str
    address: str
    switch_port: str

    def exec_args(self, argv: Sequence[str]) -> list[str]:
        """Return argv wrapped to run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass
class Network:
    """A bridge in its own namespace and the hosts plugged into it."""

    run_id: str = field(default_factory=lambda: f"{PREFIX}-{os.getpid()}")
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def switch(self) -> str:
        return f"{self.run_id}-switch"

    def create(self) -> None:
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "set", "lo", "up")
        ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", self.switch, "link", "set", BRIDGE, "up")

    def add_host(self, name: str, host_number: int) -> Host:
        """Create namespace <run>-<name> with address SUBNET.<host_number>."""
        host = Host(
            name=name,
            namespace=f"{self.run_id}-{name}",
            address=f"{SUBNET}.{host_number}",
            switch_port=f"v-{name}",
        )
        if name in self.hosts:
            msg = f"host name {name!r} is taken in network {self.run_id}"
            raise ValueError(msg)
        if len(host.switch_port) > MAX_INTERFACE_NAME:
            msg = f"host name {name!r} is too long; use at most 13 characters"
            raise ValueError(msg)
        ip("netns", "add", host.namespace)
        self.hosts[name] = host
        ip("-n", host.namespace, "link", "set", "lo", "up")
        # Both ends are created directly in their namespaces, never in the root one.
        ip(
            "link", "add", HOST_INTERFACE, "netns", host.namespace, "type", "veth",
            "peer", "name", host.switch_port, "netns", self.switch,
        )  # fmt: skip
        ip("-n", self.switch, "link", "set", host.switch_port, "master", BRIDGE)
        ip("-n", self.switch, "link", "set", host.switch_port, "up")
        ip(
            "-n", host.namespace, "addr", "add",
            f"{host.address}/{PREFIX_LENGTH}", "dev", HOST_INTERFACE,
        )  # fmt: skip
        ip("-n", host.namespace, "link", "set", HOST_INTERFACE, "up")
        return host

    def cut(self, host: Host) -> None:
        """Take the host's link down, inside its namespace: packets to it vanish."""
        ip("-n", host.namespace, "link", "set", HOST_INTERFACE, "down")

    def heal(self, host: Host) -> None:
        """Bring the host's link back up, with its address and route."""
        ip("-n", host.namespace, "link", "set", HOST_INTERFACE, "up")

    def destroy(self) -> None:
        """Delete every namespace of this run, killing what still runs in it."""
        namespaces = [host.namespace for host in self.hosts.values()]
        for namespace in [*namespaces, self.switch]:
            if namespace in list_namespaces():
                delete_namespace(namespace)
        self.hosts.clear()
