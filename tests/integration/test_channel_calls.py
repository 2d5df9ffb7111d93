"""Unary mesh calls that run in the awaiting task: cancel and repeated awaits."""

from __future__ import annotations

import asyncio

import pytest

from protos import counter_pb2, counter_pb2_grpc
from registry.mesh import Mesh
from registry.serve import MeshServer
from tests.integration.fake_service import MemoryCounter, spec

pytestmark = pytest.mark.integration

SERVICE = "mesh.counter.v1.CounterService"


async def outcome_of(call) -> tuple[str, int]:
    """Await call; return how it ended and the awaiting task's cancel count."""
    try:
        await call
    except asyncio.CancelledError:
        ended = "cancelled"
    else:
        ended = "completed"
    task = asyncio.current_task()
    assert task is not None
    return ended, task.cancelling()


async def start_server(mesh_config, etcd, counter: MemoryCounter) -> MeshServer:
    server = MeshServer([spec(counter)], mesh_config, etcd=etcd, bind_host="127.0.0.1")
    await server.start()
    assert server.registration is not None
    await server.registration.wait_registered(5)
    return server


async def test_second_await_shares_first_reply(mesh_config, etcd):
    counter = MemoryCounter()
    server = await start_server(mesh_config, etcd, counter)
    async with Mesh(mesh_config) as mesh:
        stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE))
        call = stub.Increment(counter_pb2.IncrementRequest(name="n", delta=1))

        first, second = await asyncio.gather(call, call)
        third = await call

    await server.stop()
    assert first.counter.value == 1
    assert second.counter.value == 1
    assert third.counter.value == 1
    assert len(counter.request_ids) == 1


async def test_cancel_in_flight_call_spares_awaiting_task(mesh_config, etcd):
    server = await start_server(mesh_config, etcd, MemoryCounter(delay=5.0))
    async with Mesh(mesh_config) as mesh:
        stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE))
        await mesh.resolver(SERVICE).wait_for(bool, timeout=5)
        call = stub.Increment(counter_pb2.IncrementRequest(name="n", delta=1))
        waiter = asyncio.create_task(outcome_of(call))
        await asyncio.sleep(0.2)

        call.cancel()
        ended, cancelling = await asyncio.wait_for(waiter, 5)

    await server.stop()
    assert ended == "cancelled"
    assert cancelling == 0


async def test_cancel_while_waiting_for_discovery(mesh_config, etcd_server):
    etcd_server.pause()
    try:
        async with Mesh(mesh_config) as mesh:
            stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE))
            call = stub.GetCounter(counter_pb2.GetCounterRequest(name="n"), timeout=30)
            waiter = asyncio.create_task(outcome_of(call))
            await asyncio.sleep(0.2)

            call.cancel()
            ended, cancelling = await asyncio.wait_for(waiter, 2)
            etcd_server.resume()
    finally:
        etcd_server.resume()

    assert ended == "cancelled"
    assert cancelling == 0
    assert call.cancelled()
