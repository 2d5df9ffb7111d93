"""Ejection probes end cleanly when discovery removes the ejected endpoint."""

from __future__ import annotations

import asyncio

import pytest

from protos import counter_pb2, counter_pb2_grpc
from registry.balancer import Ejector
from registry.channel import MeshChannel
from registry.discovery import Resolver
from registry.serve import MeshServer
from tests.faults.harness import SERVICE
from tests.faults.test_metrics import register_dead
from tests.integration.fake_service import MemoryCounter, spec

pytestmark = [pytest.mark.integration, pytest.mark.faults]


async def test_probe_of_removed_endpoint_ends_without_error(etcd, mesh_config):
    server = MeshServer(
        [spec(MemoryCounter())], mesh_config, etcd=etcd, bind_host="127.0.0.1"
    )
    await server.start()
    resolver = Resolver(etcd, mesh_config, SERVICE)
    resolver.start()
    dead_key = await register_dead(etcd, mesh_config, "a-dead")
    await resolver.wait_for(lambda snapshot: len(snapshot) == 2, timeout=5)
    channel = MeshChannel(resolver, ejector=Ejector(base=0.5))
    stub = counter_pb2_grpc.CounterServiceStub(channel)
    await stub.GetCounter(counter_pb2.GetCounterRequest(name="n"))
    probes = set(channel._probes)

    await etcd.delete(dead_key)
    await resolver.wait_for(lambda snapshot: "a-dead" not in snapshot, timeout=5)
    done, pending = await asyncio.wait(probes, timeout=5)

    assert len(probes) == 1
    assert pending == set()
    assert [task.exception() for task in done] == [None]
    await channel.close()
    await resolver.close()
    await server.stop()
