"""Coalesced increments against a real etcd: batches, idempotency, overflow, conflicts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from counter_svc import SERVICE_NAME
from counter_svc.coalesce import IncrementBatcher
from counter_svc.errors import CounterOverflowError, RequestIdReusedError
from counter_svc.storage import INT64_MAX, CounterStore
from protos import counter_pb2, counter_pb2_grpc
from registry.etcd import EtcdClient
from tests.integration.service_process import ServiceProcesses

pytestmark = pytest.mark.integration

CALLERS = 64
CALLS_PER_CALLER = 4


@pytest.fixture
def processes(mesh_config, tmp_path):
    started = ServiceProcesses(mesh_config, tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
async def batcher(etcd, mesh_config):
    coalescing = IncrementBatcher(CounterStore(etcd, mesh_config.namespace))
    yield coalescing
    await coalescing.close()


@pytest.fixture
async def other_replica(etcd, mesh_config):
    coalescing = IncrementBatcher(CounterStore(etcd, mesh_config.namespace))
    yield coalescing
    await coalescing.close()


class InterferingEtcd(EtcdClient):
    """An EtcdClient that runs a hook once, just before its first guarded txn."""

    hook: Callable[[], Awaitable[Any]] | None = None

    async def txn(self, compare, success, failure=()):
        if compare and self.hook is not None:
            hook, self.hook = self.hook, None
            await hook()
        return await super().txn(compare, success, failure)


async def test_replicas_count_exactly_under_64_callers(processes, etcd):
    replicas = [
        await processes.start(
            etcd, "counter_svc", SERVICE_NAME, {"MESH_COUNTER_COALESCE": "1"}
        )
        for _ in range(2)
    ]
    channels = [grpc.aio.insecure_channel(replica.address) for replica in replicas]
    stubs = [counter_pb2_grpc.CounterServiceStub(channel) for channel in channels]
    values: list[int] = []

    async def caller(index: int) -> None:
        stub = stubs[index % len(stubs)]
        for _ in range(CALLS_PER_CALLER):
            request = counter_pb2.IncrementRequest(
                name="hot", delta=1, request_id=uuid.uuid4().hex
            )
            reply = await stub.Increment(request, timeout=30)
            values.append(reply.counter.value)

    try:
        await asyncio.gather(*(caller(index) for index in range(CALLERS)))
        final = await stubs[0].GetCounter(counter_pb2.GetCounterRequest(name="hot"))
    finally:
        for channel in channels:
            await channel.close(None)

    total = CALLERS * CALLS_PER_CALLER
    assert final.counter.value == total
    assert sorted(values) == list(range(1, total + 1))


async def test_concurrent_increments_share_batches(batcher):
    values = await asyncio.gather(
        *(batcher.increment("shared", 1, uuid.uuid4().hex) for _ in range(CALLERS))
    )

    # Every call queues before the counter's worker task first runs.
    assert sorted(counter.value for counter in values) == list(range(1, CALLERS + 1))
    assert {counter.revision for counter in values} == {values[0].revision}
    assert batcher.batches == 1


async def test_duplicate_request_id_in_batch(batcher):
    calls = [batcher.increment("dup", 5, "same-id") for _ in range(4)]
    calls += [batcher.increment("dup", 1, f"other-{index}") for index in range(3)]

    results = await asyncio.gather(*calls)
    final = await batcher.store.get("dup")

    assert [counter.value for counter in results[:4]] == [5, 5, 5, 5]
    assert [counter.value for counter in results[4:]] == [6, 7, 8]
    assert final.value == 8


async def test_retry_in_later_batch_returns_stored_result(batcher):
    first = await batcher.increment("later", 2, "retry-me")
    await batcher.increment("later", 10, "in-between")

    again = await batcher.increment("later", 2, "retry-me")
    final = await batcher.store.get("later")

    assert again.value == first.value
    assert again.value == 2
    assert final.value == 12


async def test_retry_on_other_replica_returns_stored_result(batcher, other_replica):
    first = await batcher.increment("moved", 3, "cross-replica")

    again = await other_replica.increment("moved", 3, "cross-replica")
    final = await other_replica.store.get("moved")

    assert again.value == first.value
    assert final.value == 3


async def test_reused_request_id_in_batch_fails_alone(batcher):
    results = await asyncio.gather(
        batcher.increment("mixed", 1, "key-a"),
        batcher.increment("mixed", 2, "key-a"),
        batcher.increment("mixed", 1, "key-b"),
        return_exceptions=True,
    )
    final = await batcher.store.get("mixed")

    values = [getattr(result, "value", result) for result in results]
    assert values[0] == 1
    assert isinstance(values[1], RequestIdReusedError)
    assert values[2] == 2
    assert final.value == 2


async def test_overflow_in_batch_fails_alone(batcher, etcd):
    await etcd.put(batcher.store.value_key("edge"), str(INT64_MAX - 5))

    results = await asyncio.gather(
        batcher.increment("edge", 3, "up-3"),
        batcher.increment("edge", 3, "up-3-again"),
        batcher.increment("edge", 1, "up-1"),
        return_exceptions=True,
    )
    final = await batcher.store.get("edge")
    rejected = await etcd.get(batcher.store.request_key("up-3-again"))

    values = [getattr(result, "value", result) for result in results]
    assert values[0] == INT64_MAX - 2
    assert isinstance(values[1], CounterOverflowError)
    assert values[2] == INT64_MAX - 1
    assert final.value == INT64_MAX - 1
    assert rejected is None


async def test_conflict_with_other_replica_replans_batch(mesh_config, other_replica):
    async with InterferingEtcd(mesh_config) as interfering:
        batcher = IncrementBatcher(CounterStore(interfering, mesh_config.namespace))
        await batcher.increment("contested", 1, "warm-up")
        interfering.hook = lambda: other_replica.increment("contested", 100, "other")

        results = await asyncio.gather(
            batcher.increment("contested", 1, "mine-1"),
            batcher.increment("contested", 1, "mine-2"),
        )
        final = await batcher.store.get("contested")
        await batcher.close()

    assert [counter.value for counter in results] == [102, 103]
    assert final.value == 103
    assert batcher.conflicts == 1


async def test_conflict_on_stored_request_id_replays(mesh_config, other_replica):
    async with InterferingEtcd(mesh_config) as interfering:
        batcher = IncrementBatcher(CounterStore(interfering, mesh_config.namespace))
        interfering.hook = lambda: other_replica.increment("raced", 4, "raced-id")

        result = await batcher.increment("raced", 4, "raced-id")
        final = await batcher.store.get("raced")
        await batcher.close()

    assert result.value == 4
    assert final.value == 4


async def test_coalesce_flag_rejects_unknown_value(processes, etcd):
    with pytest.raises(RuntimeError) as caught:
        await processes.start(
            etcd, "counter_svc", SERVICE_NAME, {"MESH_COUNTER_COALESCE": "maybe"}
        )

    assert "MESH_COUNTER_COALESCE" in str(caught.value)
    assert "Traceback" not in str(caught.value)


async def test_per_request_mode_counts_exactly(processes, etcd):
    replica = await processes.start(
        etcd, "counter_svc", SERVICE_NAME, {"MESH_COUNTER_COALESCE": "0"}
    )
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = counter_pb2_grpc.CounterServiceStub(channel)
        replies = await asyncio.gather(
            *(
                stub.Increment(counter_pb2.IncrementRequest(name="plain", delta=1))
                for _ in range(8)
            )
        )

    assert sorted(reply.counter.value for reply in replies) == list(range(1, 9))
    assert "increments applied" not in replica.log_text()
