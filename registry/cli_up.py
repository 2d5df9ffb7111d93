"""`meshctl up`: etcd, the service replicas, the front and the ingress on one machine.

First it checks that the front and ingress ports are free, and finds etcd or
starts an embedded one. Then it starts the children and waits until every
replica is registered and the front and ingress listen. After that it shows
the status and applies the replica counts that `meshctl scale` stores (see
registry.replicas) until SIGINT or SIGTERM. Stopping runs in reverse: every
child gets SIGTERM (and SIGKILL after a grace period), any registration a
child left behind is removed, and the embedded etcd stops last.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from registry.cli_common import (
    COUNTER_SERVICE,
    USER_SERVICE,
    list_endpoints,
    open_etcd,
    run_until_signal,
    until_stopped,
    warn,
)
from registry.cli_etcd import (
    embedded_etcd_for,
    etcd_answers,
    is_local_host,
    state_dir,
)
from registry.cli_secure import SecureFiles
from registry.cli_status import StatusView, display_path, ready_message
from registry.errors import MeshError
from registry.etcd_process import port_is_open
from registry.replicas import GROUPS, ReplicaController, ReplicaGroup, SpecFactory
from registry.supervisor import ChildExit, ChildSpec, Supervisor, SupervisorError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from registry.config import MeshConfig
    from registry.etcd import EtcdClient
    from registry.etcd_process import EtcdProcess
    from registry.model import Endpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpOptions:
    """Replica counts, front port and readiness timeout (seconds) of `meshctl up`."""

    counters: int = 2
    users: int = 2
    front_port: int = 8080
    ready_timeout: float = 60.0
    ingress_port: int = 50051
    # TLS and auth everywhere (registry.cli_secure).
    secure: bool = False


def ensure_port_free(
    port: int, flag: str = "--front-port", what: str = "front"
) -> None:
    """Raise SupervisorError when port on 127.0.0.1 is in use."""
    taken = port_is_open("127.0.0.1", port, timeout=0.2)
    if not taken:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # The same option uvicorn sets, so that sockets in TIME_WAIT
            # from an earlier run do not count as taken.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                taken = True
    if taken:
        msg = (
            f"{what} port {port} is already taken; stop what listens there "
            f"or choose another port with {flag}"
        )
        raise SupervisorError(msg)


def child_environment(config: MeshConfig) -> dict[str, str]:
    """Return the environment of every child: this one plus the mesh settings."""
    env = dict(os.environ)
    env["MESH_ETCD_ENDPOINTS"] = ",".join(config.endpoint_urls)
    env["MESH_NAMESPACE"] = config.namespace
    env["MESH_LEASE_TTL"] = str(config.lease_ttl)
    env["PYTHONUNBUFFERED"] = "1"
    if config.advertise_host:
        env["MESH_ADVERTISE_HOST"] = config.advertise_host
    elif all(is_local_host(e.host) for e in config.etcd_endpoints):
        # With etcd on this machine, the replicas only need to be reachable
        # from here, and 127.0.0.1 works without a network.
        env["MESH_ADVERTISE_HOST"] = "127.0.0.1"
        env.setdefault("MESH_BIND_HOST", "127.0.0.1")
    return env


def replica_specs(
    config: MeshConfig, logs: Path, secure: SecureFiles | None = None
) -> SpecFactory:
    """Return a function that builds the spec of replica number n of a group."""

    def make(group: ReplicaGroup, index: int) -> ChildSpec:
        name = f"{group.child_prefix}-{index}"
        argv = (sys.executable, "-m", group.name)
        env = _identity_environment(config, secure, group.name)
        return ChildSpec(name, argv, env, logs / f"{name}.log", group=group.name)

    return make


def _identity_environment(
    config: MeshConfig, secure: SecureFiles | None, program: str
) -> dict[str, str]:
    env = child_environment(config)
    if secure is not None:
        env.update(secure.child_environment(program))
    return env


def child_specs(
    options: UpOptions,
    config: MeshConfig,
    logs: Path,
    secure: SecureFiles | None = None,
) -> list[ChildSpec]:
    replica = replica_specs(config, logs, secure)
    counter, user = GROUPS["counter_svc"], GROUPS["user_svc"]
    specs = [replica(counter, n) for n in range(1, options.counters + 1)]
    specs += [replica(user, n) for n in range(1, options.users + 1)]
    argv = (sys.executable, "-m", "front", "--port", str(options.front_port))
    env = _identity_environment(config, secure, "front")
    specs.append(ChildSpec("front", argv, env, logs / "front.log"))
    # The ingress gives grpcurl one stable address however the mesh scales.
    ingress = (
        sys.executable,
        "-m",
        "registry.ingress",
        "--port",
        str(options.ingress_port),
    )
    env = _identity_environment(config, secure, "ingress")
    specs.append(ChildSpec("ingress", ingress, env, logs / "ingress.log"))
    return specs


class RegistrationCleaner:
    """Revokes the lease of registrations that an exited child left behind.

    A child stopped with SIGTERM deletes its own keys. This covers a child
    that crashed or had to be killed: its keys would otherwise stay until the
    lease expires, and clients would keep calling a dead address.
    """

    def __init__(
        self, client: EtcdClient, config: MeshConfig, report: Callable[[str], None]
    ) -> None:
        self._client = client
        self._config = config
        self._report = report

    async def on_exit(self, exit_info: ChildExit) -> None:
        if not exit_info.instance_ids:
            return
        try:
            leftovers = await self._remove(exit_info.instance_ids)
        except MeshError as exc:
            warn(f"could not remove the registration of {exit_info.name}: {exc}")
            return
        for endpoint in leftovers:
            self._report(
                f"removed the registration of {exit_info.name} "
                f"({endpoint.service} {endpoint.instance_id}) that it left behind"
            )

    async def _remove(self, instance_ids: frozenset[str]) -> list[Endpoint]:
        endpoints, _ = await list_endpoints(
            self._client, self._config, self._config.services_prefix(), quiet=True
        )
        leftovers = [e for e in endpoints.values() if e.instance_id in instance_ids]
        # Revoking the lease deletes every key of that process at once.
        for lease in sorted({e.lease for e in leftovers if e.lease}):
            await self._client.revoke_lease(lease)
        for endpoint in leftovers:
            if not endpoint.lease:
                await self._client.delete(endpoint.key)
        return leftovers


async def run_up(config: MeshConfig, options: UpOptions) -> int:
    # Checked before anything starts, so a taken port leaves nothing behind.
    ensure_port_free(options.front_port)
    ensure_port_free(options.ingress_port, "--ingress-port", "ingress")
    run = LocalMesh(config, options, state_dir())
    return await run_until_signal(run.run)


class LocalMesh:
    """One run of `meshctl up`, from the etcd check to the last stop."""

    def __init__(self, config: MeshConfig, options: UpOptions, state: Path) -> None:
        self.config = config
        self.options = options
        self.state = state
        self.logs = state / "logs"
        self.console = Console()
        self.secure = SecureFiles(state) if options.secure else None
        if self.secure is not None:
            self.config = self.secure.admin_config(config)

    def say(self, message: str) -> None:
        # Soft wrap leaves long lines, such as the grpcurl command, unbroken
        # for copy and paste.
        try:
            self.console.print(Text(message), soft_wrap=True)
        except OSError:
            # The terminal is gone after a SIGHUP, and the stop must go on.
            logger.info("%s", message)

    async def run(self, stop: asyncio.Event) -> int:
        """Run the mesh until stop is set and return the exit status."""
        etcd: EtcdProcess | None = None
        if self.secure is not None and self.secure.ensure_certs():
            self.say(f"created certificates in {display_path(self.secure.certs)}")
        if not etcd_answers(self.config):
            etcd = self._embedded_etcd()
            self.say(
                f"starting an embedded etcd at {etcd.client_url} "
                f"(data in {display_path(etcd.data_dir)}, "
                f"log in {display_path(self.state / 'etcd.log')})"
            )
            await asyncio.to_thread(etcd.start)
        try:
            if stop.is_set():
                return 0
            if self.secure is not None:
                await self.secure.init_auth(self.config)
                self.say(
                    f"etcd auth is on; passwords in {display_path(self.secure.auth)}"
                )
            async with open_etcd(self.config) as client:
                return await self._run_children(client, stop)
        finally:
            if etcd is not None:
                await asyncio.to_thread(etcd.stop)
                self.say("embedded etcd stopped")

    def _embedded_etcd(self) -> EtcdProcess:
        if self.secure is not None:
            return self.secure.etcd_process(self.config)
        return embedded_etcd_for(self.config, self.state)

    def _ready_message(self, fresh: Mapping[str, Endpoint]) -> str:
        options = self.options
        if self.secure is None:
            return ready_message(
                options.front_port, fresh, self.logs, options.ingress_port
            )
        return ready_message(
            options.front_port,
            fresh,
            self.logs,
            options.ingress_port,
            flags=self.secure.grpcurl_flags(),
            instance_flags=self.secure.grpcurl_flags(COUNTER_SERVICE),
        )

    async def _run_children(self, client: EtcdClient, stop: asyncio.Event) -> int:
        config, options = self.config, self.options
        # Instances registered before the start do not count towards readiness.
        baseline, _ = await list_endpoints(client, config, config.services_prefix())
        cleaner = RegistrationCleaner(client, config, self.say)
        supervisor = Supervisor(
            child_specs(options, config, self.logs, self.secure),
            report=self.say,
            on_exit=cleaner.on_exit,
        )
        view = StatusView(client, config, supervisor, self.console)
        expected = {COUNTER_SERVICE: options.counters, USER_SERVICE: options.users}
        replicas = ReplicaController(
            client,
            config,
            supervisor,
            replica_specs(config, self.logs, self.secure),
            self.say,
        )
        await replicas.claim(
            {"counter_svc": options.counters, "user_svc": options.users}
        )
        try:
            await supervisor.start()
            ready = view.wait_ready(
                baseline,
                expected,
                options.front_port,
                options.ready_timeout,
                ingress_port=options.ingress_port,
            )
            fresh = await until_stopped(ready, stop)
            if fresh is None:
                return 0
            self.say(self._ready_message(fresh))
            await until_stopped(_show_and_scale(view, replicas), stop)
            return 0
        finally:
            running = sum(child.running for child in supervisor.children)
            self.say(f"stopping {running} processes")
            await supervisor.stop()
            await replicas.release()
            await _report_leftovers(client, config, baseline)


async def _show_and_scale(view: StatusView, replicas: ReplicaController) -> None:
    # A task group, not gather: until_stopped needs a task that ends as
    # cancelled, and a cancelled gather ends with a CancelledError result.
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(view.show())
        tasks.create_task(replicas.run())


async def _report_leftovers(
    client: EtcdClient, config: MeshConfig, baseline: Mapping[str, Endpoint]
) -> None:
    """Warn about instances registered during the run that are still there.

    After a clean stop these are replicas started by hand next to meshctl,
    or children whose keys could not be removed and now wait for their lease
    to expire.
    """
    try:
        endpoints, _ = await list_endpoints(
            client, config, config.services_prefix(), quiet=True
        )
    except MeshError as exc:
        warn(f"could not check for registrations left behind: {exc}")
        return
    left = sorted(e.instance_id for key, e in endpoints.items() if key not in baseline)
    if left:
        warn(
            f"{len(left)} instances registered during this run are still "
            f"registered: {', '.join(left)}. Either their process still runs, "
            f"or their keys expire with the lease within {config.lease_ttl} s."
        )
