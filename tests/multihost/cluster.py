"""A 3-member etcd cluster, one member per namespace, and etcdctl reads of it.

registry.etcd_process.EtcdProcess starts a single-member cluster, so the
command of each member is built here, with the same binary.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from registry.etcd_process import find_etcd_binary
from registry.model import Endpoint, decode_record
from tests.multihost.netns import Host

CLIENT_PORT = 2379
PEER_PORT = 2380


@dataclass
class EtcdMember:
    """One etcd member running inside its own namespace."""

    host: Host
    data_dir: Path
    initial_cluster: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://{self.host.address}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host.address}:{PEER_PORT}"

    def command(self) -> list[str]:
        return [
            find_etcd_binary(),
            "--name", self.host.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.data_dir.parent.name,
            "--log-level", "warn",
        ]  # fmt: skip

    def start(self) -> None:
        """Start the member. On a restart it reuses its data directory and rejoins."""
        log_path = self.data_dir.with_suffix(".log")
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.host.exec_args(self.command()),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def stop(self) -> None:
        """Stop with SIGTERM, as `docker stop` does, and wait for the exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class EtcdCluster:
    """Three members started together, read with etcdctl from a client host."""

    def __init__(self, hosts: list[Host], work_dir: Path, client: Host) -> None:
        initial = ",".join(
            f"{host.name}=http://{host.address}:{PEER_PORT}" for host in hosts
        )
        self.members = [
            EtcdMember(host, work_dir / host.name, initial) for host in hosts
        ]
        self.client = client

    @property
    def endpoints(self) -> str:
        """The value of MESH_ETCD_ENDPOINTS: every member's client URL."""
        return ",".join(member.client_url for member in self.members)

    def start(self) -> None:
        for member in self.members:
            member.start()

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def etcdctl(self, *args: str, endpoints: str | None = None) -> str:
        """Run etcdctl in the client host and return its output."""
        argv = [
            str(Path(find_etcd_binary()).with_name("etcdctl")),
            f"--endpoints={endpoints or self.endpoints}",
            "--command-timeout=2s",
            "--dial-timeout=1s",
            *args,
        ]
        result = subprocess.run(
            self.client.exec_args(argv),
            capture_output=True,
            text=True,
            check=False,
            timeout=15,
        )
        if result.returncode != 0:
            msg = f"etcdctl {' '.join(args)} failed: {result.stderr.strip()}"
            raise EtcdctlError(msg)
        return result.stdout

    def healthy(self, member: EtcdMember | None = None) -> bool:
        """True when a linearizable read succeeds, which needs a quorum.

        With `member`, that member must serve the read, so it has rejoined.
        """
        endpoints = member.client_url if member is not None else None
        try:
            self.etcdctl("get", "/health-probe", endpoints=endpoints)
        except EtcdctlError:
            return False
        return True

    def leader(self) -> EtcdMember:
        """Return the member that the running members report as their leader."""
        running = [member for member in self.members if member.running]
        raw = self.etcdctl(
            "endpoint",
            "status",
            "--write-out=json",
            endpoints=",".join(member.client_url for member in running),
        )
        statuses = json.loads(raw)
        leader_ids = {status["Status"]["leader"] for status in statuses}
        for status in statuses:
            if status["Status"]["header"]["member_id"] in leader_ids:
                url = status["Endpoint"]
                return next(member for member in running if member.client_url == url)
        msg = f"no running member is the leader; members report leader ids {leader_ids}"
        raise EtcdctlError(msg)

    def registrations(
        self, prefix: str, service: str, *, member: EtcdMember | None = None
    ) -> dict[str, Endpoint]:
        """Return instance id -> Endpoint under prefix.

        With `member`, the read is serializable: that member alone serves it
        from its own copy, so it works without a quorum.
        """
        args = ["get", "--prefix", prefix, "--write-out=json"]
        if member is not None:
            args.append("--consistency=s")
        raw = self.etcdctl(*args, endpoints=member.client_url if member else None)
        found: dict[str, Endpoint] = {}
        for kv in json.loads(raw).get("kvs", []):
            key = base64.b64decode(kv["key"]).decode()
            value = base64.b64decode(kv["value"])
            endpoint = decode_record(service, key, value, lease=int(kv.get("lease", 0)))
            found[endpoint.instance_id] = endpoint
        return found


class EtcdctlError(RuntimeError):
    """etcdctl exited with an error: no quorum, timeout or a refused connection."""
