"""Fixtures of the fault tests: service processes, a mesh client, a results file.

The etcd_server, mesh_config (lease TTL 3 s) and etcd fixtures come from
tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.config import MeshConfig
from registry.mesh import Mesh
from tests.faults.load import SteadyLoad
from tests.faults.results import ResultsFile, results_path
from tests.integration.service_process import ServiceProcesses


@pytest.fixture
def processes(mesh_config: MeshConfig, tmp_path: Path) -> Iterator[ServiceProcesses]:
    started = ServiceProcesses(mesh_config, tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
async def mesh(mesh_config: MeshConfig) -> AsyncIterator[Mesh]:
    async with Mesh(mesh_config) as client:
        yield client


@pytest.fixture
async def steady_load() -> AsyncIterator[Callable[..., SteadyLoad]]:
    """Start a SteadyLoad. Loads still running when the test ends are stopped.

    Without this, a test that fails before `stop()` leaves workers calling a
    closed mesh for the rest of the session.
    """
    started: list[SteadyLoad] = []

    def start(stub: Any, name: str, **options: Any) -> SteadyLoad:
        load = SteadyLoad(stub, name, **options)
        load.start()
        started.append(load)
        return load

    yield start
    for load in started:
        await load.stop()


@pytest.fixture(scope="session")
def results() -> Iterator[ResultsFile]:
    """Measured figures of every scenario run, written once the session ends."""
    collected = ResultsFile(results_path())
    yield collected
    collected.write()
