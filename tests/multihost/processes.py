"""Service replicas and the load client, each run inside a host namespace."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.multihost.netns import Host, Network

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE = "mesh.counter.v1.CounterService"
MESH_NAMESPACE = "/multihost"
SERVICE_PREFIX = f"{MESH_NAMESPACE}/services/{SERVICE}/"
LEASE_TTL = 3
FAKE_MODULE = "tests.integration.fake_service"
COUNTER_MODULE = "counter_svc"
# Replica N gets the address SUBNET.(REPLICA_HOST_BASE + N).
REPLICA_HOST_BASE = 20
_SERVING_LINE = re.compile(r"serving .+ at (\S+) as (\S+)")

# What registry.registration logs when a lease refresh fails, and when a
# lease is gone and the replica registers again.
REFRESH_RETRY = "refresh failed; retrying"
REREGISTERED = "registering again"


def mesh_environment(endpoints: str, namespace: str, lease_ttl: int) -> dict[str, str]:
    """Return the environment of a mesh process, without MESH_ADVERTISE_HOST.

    The process then advertises the address that routes to etcd, its own.
    """
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("MESH_")
    }
    env.update(
        MESH_ETCD_ENDPOINTS=endpoints,
        MESH_NAMESPACE=namespace,
        MESH_LEASE_TTL=str(lease_ttl),
        MESH_GRACE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def wait_until(condition: Callable[[], bool], timeout: float, description: str) -> None:
    """Poll condition until it is true, or fail with `description` after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout:.0f} s waiting until {description}"
            raise AssertionError(msg)
        time.sleep(0.1)


def _terminate(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class ReplicaProcess:
    """`python -m <module>` in a host namespace, advertising its own address."""

    host: Host
    module: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.host.exec_args([sys.executable, "-m", self.module]),
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def serving(self) -> tuple[str, str] | None:
        """Return (address, instance id) from the "serving" line, once printed."""
        match = _SERVING_LINE.search(self.log_text())
        return (match.group(1), match.group(2)) if match else None

    def wait_serving(self, timeout: float = 30.0) -> None:
        def started() -> bool:
            if self.process is not None and self.process.poll() is not None:
                msg = f"{self.module} in {self.host.name} exited:\n{self.log_text()}"
                raise AssertionError(msg)
            return self.serving() is not None

        wait_until(started, timeout, f"{self.module} in {self.host.name} serves")

    @property
    def instance_id(self) -> str:
        serving = self.serving()
        assert serving is not None, f"{self.host.name} has not printed its serving line"
        return serving[1]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None:
            _terminate(self.process)

    def log_text(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    def log_count(self, text: str) -> int:
        return self.log_text().count(text)

    def registration_retries(self) -> int:
        """Count the failed registration attempts that the replica logged."""
        return self.log_count(f"registration of {self.instance_id} failed; retrying")


@dataclass
class LoadClientProcess:
    """tests.multihost.load_client in a host namespace, read line by line."""

    host: Host
    env: dict[str, str]
    work_dir: Path
    arguments: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] | None = None
    process: subprocess.Popen[str] | None = None

    @property
    def output_path(self) -> Path:
        return self.work_dir / "load-client.json"

    def start(self) -> None:
        argv = [sys.executable, "-m", "tests.multihost.load_client"]
        argv += ["--output", str(self.output_path), *self.arguments]
        with (self.work_dir / "load-client.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.host.exec_args(argv),
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
        threading.Thread(target=self._read, name="load-client", daemon=True).start()

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            report = json.loads(line)
            if report["kind"] == "final":
                self.final = report
            else:
                self.status = report

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def acked(self) -> int:
        return int(self.status.get("acked", 0))

    def served(self, instance_id: str) -> int:
        return int(self.status.get("served", {}).get(instance_id, 0))

    def endpoints(self) -> dict[str, str]:
        return dict(self.status.get("endpoints", {}))

    def wait_acks(self, count: int, timeout: float = 60.0) -> None:
        """Wait until `count` more calls succeed from now on."""
        target = self.acked() + count
        wait_until(
            lambda: self.acked() >= target,
            timeout,
            f"the load client has {target} acks",
        )

    def wait_endpoints(self, expected: set[str], timeout: float = 30.0) -> None:
        wait_until(
            lambda: set(self.endpoints()) == expected,
            timeout,
            f"the load client discovers exactly {sorted(expected)}",
        )

    def wait_done(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the client to stop by itself and return its final report."""
        assert self.process is not None
        self.process.wait(timeout=timeout)
        return self._final_report()

    def stop(self) -> dict[str, Any]:
        """Ask the client to stop, wait for its calls in flight, return the report."""
        assert self.process is not None
        assert self.process.stdin is not None
        if self.process.poll() is None:
            self.process.stdin.write("stop\n")
            self.process.stdin.close()
        self.process.wait(timeout=60)
        return self._final_report()

    def kill(self) -> None:
        if self.process is not None:
            _terminate(self.process)

    def log_count(self, text: str) -> int:
        """Count `text` in the client's stderr, where its log records go."""
        log_path = self.work_dir / "load-client.log"
        return log_path.read_text(errors="replace").count(text)

    def _final_report(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.output_path.read_text())
        return report


@dataclass
class Replicas:
    """Replicas started by one test, each in a new host, ended by stop_all()."""

    network: Network
    env: dict[str, str]
    log_dir: Path
    started: list[ReplicaProcess] = field(default_factory=list)

    def start(self, module: str, count: int = 1) -> list[ReplicaProcess]:
        """Start `count` replicas at once and wait until each prints its address."""
        batch: list[ReplicaProcess] = []
        for _ in range(count):
            number = len(self.started) + 1
            host = self.network.add_host(f"rep{number}", REPLICA_HOST_BASE + number)
            replica = ReplicaProcess(
                host, module, self.env, self.log_dir / f"rep{number}.log"
            )
            replica.start()
            self.started.append(replica)
            batch.append(replica)
        for replica in batch:
            replica.wait_serving()
        return batch

    def stop_all(self) -> None:
        """Send SIGTERM to every replica first, so that they drain in parallel."""
        for replica in self.started:
            if replica.running:
                assert replica.process is not None
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.started:
            replica.stop()
