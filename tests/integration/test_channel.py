"""The balanced channel under generated stubs, against real servers and etcd."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest

from protos import counter_pb2, counter_pb2_grpc
from registry.config import MeshConfig
from registry.etcd import EtcdClient
from registry.mesh import Mesh
from registry.model import INSTANCE_METADATA_KEY
from registry.serve import MeshServer
from tests.integration.fake_service import MemoryCounter, spec

pytestmark = pytest.mark.integration

SERVICE = "mesh.counter.v1.CounterService"


async def start_servers(
    config: MeshConfig, etcd: EtcdClient, count: int
) -> list[MeshServer]:
    servers = [
        MeshServer([spec(MemoryCounter())], config, etcd=etcd, bind_host="127.0.0.1")
        for _ in range(count)
    ]
    for server in servers:
        await server.start()
        assert server.registration is not None
        await server.registration.wait_registered(5)
    return servers


@pytest.fixture
async def mesh(mesh_config: MeshConfig) -> AsyncIterator[Mesh]:
    async with Mesh(mesh_config) as mesh:
        yield mesh


async def test_round_robin_spreads_calls_evenly(mesh_config, etcd, mesh):
    servers = await start_servers(mesh_config, etcd, 3)
    resolver = mesh.resolver(SERVICE)
    await resolver.wait_for(lambda s: len(s) == 3, timeout=5)
    stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE))
    served: Counter[str] = Counter()

    for _ in range(300):
        call = stub.Increment(counter_pb2.IncrementRequest(name="n", delta=1))
        await call
        trailers = dict(await call.trailing_metadata())
        served[trailers[INSTANCE_METADATA_KEY]] += 1

    assert set(served) == {server.instance_id for server in servers}
    for count in served.values():
        assert 80 <= count <= 120
    for server in servers:
        await server.stop()


async def test_streaming_method_works_through_stub(mesh_config, etcd, mesh):
    servers = await start_servers(mesh_config, etcd, 1)
    stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE))

    call = stub.WatchCounter(counter_pb2.WatchCounterRequest(name="n"))
    values = [reply.counter.value async for reply in call]

    assert values == [0, 1, 2]
    assert (
        dict(await call.trailing_metadata())[INSTANCE_METADATA_KEY]
        == servers[0].instance_id
    )
    assert await call.code() == grpc.StatusCode.OK
    await servers[0].stop()


async def test_no_endpoint_fails_at_once_naming_service(mesh_config, mesh):
    stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetCounter(counter_pb2.GetCounterRequest(name="n"), timeout=2)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert SERVICE in (caught.value.details() or "")
    assert mesh_config.namespace in (caught.value.details() or "")


async def test_removed_endpoint_gets_no_more_calls(mesh_config, etcd, mesh):
    servers = await start_servers(mesh_config, etcd, 2)
    channel = mesh.channel(SERVICE)
    resolver = mesh.resolver(SERVICE)
    await resolver.wait_for(lambda s: len(s) == 2, timeout=5)
    stub = counter_pb2_grpc.CounterServiceStub(channel)
    gone = servers[0]

    await gone.stop()
    await resolver.wait_for(lambda s: len(s) == 1, timeout=5)
    for _ in range(20):
        await stub.GetCounter(counter_pb2.GetCounterRequest(name="n"))

    stats = channel.statistics()
    assert stats[gone.instance_id].calls == 0
    assert stats[servers[1].instance_id].calls == 20
    assert [e.instance_id for e in channel.endpoints()] == [servers[1].instance_id]
    await servers[1].stop()


async def test_concurrent_calls_all_succeed(mesh_config, etcd, mesh):
    servers = await start_servers(mesh_config, etcd, 2)
    await mesh.resolver(SERVICE).wait_for(lambda s: len(s) == 2, timeout=5)
    stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE))

    replies = await asyncio.gather(
        *(stub.GetCounter(counter_pb2.GetCounterRequest(name="n")) for _ in range(100))
    )

    assert len(replies) == 100
    for server in servers:
        await server.stop()


async def crash(server: MeshServer) -> None:
    """Stop serving without deregistering, as a killed process would."""
    assert server.registration is not None
    task = server.registration._task
    assert task is not None
    task.cancel()
    await server._server.stop(None)


async def test_dead_instance_is_routed_around_before_lease_expires(
    mesh_config, etcd, mesh
):
    servers = await start_servers(mesh_config, etcd, 3)
    channel = mesh.channel(SERVICE)
    await mesh.resolver(SERVICE).wait_for(lambda s: len(s) == 3, timeout=5)
    stub = counter_pb2_grpc.CounterServiceStub(channel)
    await crash(servers[0])

    replies = [
        await stub.Increment(counter_pb2.IncrementRequest(name="n", delta=1))
        for _ in range(60)
    ]

    assert len(replies) == 60
    assert len(mesh.resolver(SERVICE).snapshot()) == 3
    assert channel.statistics()[servers[0].instance_id].ejections == 1
    for server in servers[1:]:
        await server.stop()


async def test_empty_request_id_is_filled_once_per_call(mesh_config, etcd, mesh):
    servicer = MemoryCounter()
    server = MeshServer([spec(servicer)], mesh_config, etcd=etcd, bind_host="127.0.0.1")
    await server.start()
    await mesh.resolver(SERVICE).wait_for(lambda s: len(s) == 1, timeout=5)
    stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE))

    await stub.Increment(counter_pb2.IncrementRequest(name="n", delta=1))
    await stub.Increment(
        counter_pb2.IncrementRequest(name="n", delta=1, request_id="mine")
    )

    assert len(servicer.request_ids[0]) == 32
    assert servicer.request_ids[1] == "mine"
    await server.stop()


async def test_slow_replica_gets_few_calls_under_ewma(mesh_config, etcd, mesh):
    fast = [MemoryCounter(delay=0.002) for _ in range(2)]
    slow = MemoryCounter(delay=0.02)
    servers = [
        MeshServer([spec(servicer)], mesh_config, etcd=etcd, bind_host="127.0.0.1")
        for servicer in [*fast, slow]
    ]
    for server in servers:
        await server.start()
    await mesh.resolver(SERVICE).wait_for(lambda s: len(s) == 3, timeout=5)
    stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE, policy="ewma"))

    async def worker() -> None:
        for _ in range(50):
            await stub.Increment(counter_pb2.IncrementRequest(name="n", delta=1))

    await asyncio.gather(*(worker() for _ in range(6)))

    slow_share = len(slow.request_ids) / 300
    assert slow_share < 0.15
    for server in servers:
        await server.stop()
