"""Run `python -m counter_svc` or `python -m user_svc` as a real process.

The process gets MESH_* variables that point at the test's etcd, listens on
127.0.0.1 on a free port, and counts as started once its registration key is
in etcd. Its output goes to a log file that failures quote.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from registry.config import MeshConfig
from registry.etcd import EtcdClient
from registry.model import Endpoint, decode_record

REPO_ROOT = Path(__file__).resolve().parents[2]
_SERVING_LINE = re.compile(r"serving .+ at (\S+) as (\S+)")


@dataclass
class ServiceProcess:
    """One service process started with `python -m <module>`."""

    module: str
    service: str
    config: MeshConfig
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    endpoint: Endpoint | None = None

    @property
    def address(self) -> str:
        assert self.endpoint is not None, "start() the process first"
        return self.endpoint.address

    @property
    def instance_id(self) -> str:
        assert self.endpoint is not None, "start() the process first"
        return self.endpoint.instance_id

    def environment(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("MESH_")
        }
        env.update(
            MESH_ETCD_ENDPOINTS=",".join(self.config.endpoint_urls),
            MESH_NAMESPACE=self.config.namespace,
            MESH_LEASE_TTL=str(self.config.lease_ttl),
            MESH_ADVERTISE_HOST="127.0.0.1",
            MESH_BIND_HOST="127.0.0.1",
            MESH_PORT="0",
            MESH_GRACE="1",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    async def start(self, etcd: EtcdClient, timeout: float = 30.0) -> Endpoint:
        """Start the process and wait until its registration is in etcd."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=REPO_ROOT,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.module} exited with status {self.process.returncode}:\n"
                    + self.log_tail()
                )
            endpoint = await self._registered_endpoint(etcd)
            if endpoint is not None:
                self.endpoint = endpoint
                return endpoint
            await asyncio.sleep(0.1)
        self.kill()
        raise TimeoutError(
            f"{self.module} did not register within {timeout:.0f} s:\n"
            + self.log_tail()
        )

    async def _registered_endpoint(self, etcd: EtcdClient) -> Endpoint | None:
        match = _SERVING_LINE.search(self.log_text())
        if match is None:
            return None
        key = self.config.service_prefix(self.service) + match.group(2)
        kv = await etcd.get(key)
        if kv is None:
            return None
        return decode_record(self.service, kv.key, kv.value, lease=kv.lease)

    def stop(self, timeout: float = 15.0) -> int:
        """Send SIGTERM and wait; return the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """Send SIGKILL, so the process leaves its registration behind."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_text(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@dataclass
class ServiceProcesses:
    """Processes started by one test. `stop_all()` ends the ones still running."""

    config: MeshConfig
    log_dir: Path
    started: list[ServiceProcess] = field(default_factory=list)

    async def start(
        self,
        etcd: EtcdClient,
        module: str,
        service: str,
        extra_env: dict[str, str] | None = None,
    ) -> ServiceProcess:
        log_path = self.log_dir / f"{module}-{len(self.started)}.log"
        process = ServiceProcess(
            module, service, self.config, log_path, extra_env=dict(extra_env or {})
        )
        self.started.append(process)
        await process.start(etcd)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            try:
                process.stop(timeout=10.0)
            except subprocess.TimeoutExpired:
                process.kill()
