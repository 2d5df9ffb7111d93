"""Fixtures shared by every test tier: a real etcd on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from registry.config import MeshConfig
from registry.etcd import EtcdClient
from registry.etcd_process import EtcdProcess, free_port


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdProcess]:
    """A real etcd member with its own data directory, stopped after the test."""
    server = EtcdProcess(
        data_dir=tmp_path / "etcd-data",
        client_port=free_port(),
        peer_port=free_port(),
        log_path=tmp_path / "etcd.log",
    )
    server.start()
    yield server
    server.kill()


@pytest.fixture
def mesh_config(etcd_server: EtcdProcess) -> MeshConfig:
    """Configuration pointing at the test's etcd, with a short lease TTL."""
    return MeshConfig.from_env(
        {},
        etcd_endpoints=etcd_server.client_url,
        namespace="/test-mesh",
        lease_ttl=3,
        advertise_host="127.0.0.1",
    )


@pytest.fixture
async def etcd(mesh_config: MeshConfig) -> AsyncIterator[EtcdClient]:
    """An open client on the test's etcd."""
    async with EtcdClient(mesh_config) as client:
        yield client
