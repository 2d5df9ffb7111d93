"""Fixtures of the contract tests: one etcd and one process per service.

The processes start once per session, because the contract tests only send
requests; each test picks its own names, so they do not interfere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.config import MeshConfig
from registry.etcd_process import EtcdProcess, free_port
from registry.mesh import Mesh
from tests.contracts.descriptors import service_packages, services
from tests.contracts.live import LiveMesh, LoopThread
from tests.integration.service_process import ServiceProcesses

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder, so `-m contracts` selects them."""
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.contracts)


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def live(
    tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread
) -> Iterator[LiveMesh]:
    """Every service of the contracts, each in its own process, in the mesh."""
    directory = tmp_path_factory.mktemp("contracts")
    etcd = EtcdProcess(
        data_dir=directory / "etcd-data",
        client_port=free_port(),
        peer_port=free_port(),
        log_path=directory / "etcd.log",
    )
    etcd.start()
    config = MeshConfig.from_env(
        {},
        etcd_endpoints=etcd.client_url,
        namespace="/contracts",
        lease_ttl=5,
        advertise_host="127.0.0.1",
    )
    mesh = Mesh(config)
    processes = ServiceProcesses(config, directory)
    try:
        loop_thread.run(mesh.__aenter__())
        loop_thread.run(_start_services(mesh, processes))
        yield LiveMesh(config, mesh, processes, loop_thread)
    finally:
        processes.stop_all()
        loop_thread.run(mesh.close())
        etcd.kill()


async def _start_services(mesh: Mesh, processes: ServiceProcesses) -> None:
    packages = service_packages()
    missing = [s.full_name for s in services() if s.full_name not in packages]
    assert not missing, f"no package serves {missing}; see service_packages()"
    await asyncio.gather(
        *(
            processes.start(mesh.etcd, packages[service.full_name], service.full_name)
            for service in services()
        )
    )
    for service in services():
        await mesh.resolver(service.full_name).wait_for(bool, timeout=10)
