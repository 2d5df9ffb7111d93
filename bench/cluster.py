"""A throwaway mesh on loopback: one etcd, service processes, the front.

Everything listens on 127.0.0.1 on free ports and lives in a temporary
directory that is removed afterwards, together with the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from registry.config import MeshConfig
from registry.etcd import EtcdClient
from registry.etcd_process import EtcdProcess, free_port
from tests.integration.front_server import FrontProcess
from tests.integration.service_process import ServiceProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
COUNTER_SERVICE = "mesh.counter.v1.CounterService"
FAKE_SERVICE_MODULE = "tests.integration.fake_service"


@dataclass
class Cluster:
    """An etcd member with an open client, and the processes started on it."""

    config: MeshConfig
    etcd: EtcdClient
    directory: Path
    services: list[ServiceProcess] = field(default_factory=list)
    fronts: list[FrontProcess] = field(default_factory=list)

    async def start_service(
        self, module: str, env: dict[str, str] | None = None
    ) -> ServiceProcess:
        """Start `python -m module` and wait until it is registered."""
        log_path = self.directory / f"{module}-{len(self.services)}.log"
        process = ServiceProcess(
            module, COUNTER_SERVICE, self.config, log_path, extra_env=env or {}
        )
        self.services.append(process)
        await process.start(self.etcd)
        return process

    async def start_services(
        self, module: str, envs: list[dict[str, str]]
    ) -> list[ServiceProcess]:
        """Start one process per environment, side by side."""
        return list(
            await asyncio.gather(*(self.start_service(module, env) for env in envs))
        )

    async def start_front(self) -> FrontProcess:
        front = FrontProcess(self.config, self.directory / "front.log")
        self.fronts.append(front)
        await front.start()
        return front

    def stop_processes(self) -> None:
        for front in self.fronts:
            front.stop(timeout=10.0)
        for service in self.services:
            service.kill()


@contextlib.asynccontextmanager
async def open_cluster(
    namespace: str = "/bench", lease_ttl: int = 10
) -> AsyncIterator[Cluster]:
    """Start etcd in a temporary directory and yield a cluster on it."""
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as raw:
        directory = Path(raw)
        server = EtcdProcess(
            data_dir=directory / "etcd-data",
            client_port=free_port(),
            peer_port=free_port(),
            log_path=directory / "etcd.log",
        )
        server.start()
        config = MeshConfig.from_env(
            {},
            etcd_endpoints=server.client_url,
            namespace=namespace,
            lease_ttl=lease_ttl,
            advertise_host="127.0.0.1",
        )
        cluster: Cluster | None = None
        try:
            async with EtcdClient(config) as etcd:
                cluster = Cluster(config, etcd, directory)
                yield cluster
        finally:
            if cluster is not None:
                cluster.stop_processes()
            server.kill()
