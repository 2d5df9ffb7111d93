"""CounterService against a real etcd: in-process servicer and real processes."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from counter_svc import SERVICE_NAME
from counter_svc.idempotency import REQUEST_RETENTION
from counter_svc.servicer import CounterServicer
from counter_svc.storage import INT64_MAX, CounterStore
from counter_svc.watch import watch_counter
from protos import counter_pb2, counter_pb2_grpc
from registry.config import MeshConfig
from registry.etcd import EtcdClient
from registry.model import INSTANCE_METADATA_KEY
from tests.integration.service_process import ServiceProcesses
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

Stub: TypeAlias = "counter_pb2_grpc.CounterServiceAsyncStub"


@pytest.fixture
async def servicer(etcd, mesh_config) -> CounterServicer:
    return CounterServicer(etcd, mesh_config.namespace)


@pytest.fixture
async def stub(servicer) -> AsyncIterator[Stub]:
    server = grpc.aio.server()
    counter_pb2_grpc.add_CounterServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield counter_pb2_grpc.CounterServiceStub(channel)
    await server.stop(None)


@pytest.fixture
def processes(mesh_config, tmp_path):
    started = ServiceProcesses(mesh_config, tmp_path)
    yield started
    started.stop_all()


async def increment(stub: Stub, name: str, delta: int = 1, request_id: str = "") -> int:
    request = counter_pb2.IncrementRequest(
        name=name, delta=delta, request_id=request_id
    )
    response = await stub.Increment(request)
    return response.counter.value


async def get_value(stub: Stub, name: str) -> int:
    response = await stub.GetCounter(counter_pb2.GetCounterRequest(name=name))
    return response.counter.value


def details(error: grpc.aio.AioRpcError) -> str:
    return error.details() or ""


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    """Return the fields named in the error's google.rpc.BadRequest details."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    fields: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields.extend(violation.field for violation in bad_request.field_violations)
    return fields


# --- values and increments ---------------------------------------------------


async def test_unknown_counter_is_zero(stub):
    value = await get_value(stub, "never-incremented")

    assert value == 0


async def test_increment_returns_new_value(stub):
    first = await increment(stub, "clicks", 5)
    second = await increment(stub, "clicks", -2)

    assert first == 5
    assert second == 3
    assert await get_value(stub, "clicks") == 3


async def test_concurrent_increments_are_exact(stub):
    results = await asyncio.gather(*(increment(stub, "busy") for _ in range(50)))

    assert await get_value(stub, "busy") == 50
    assert sorted(results) == list(range(1, 51))


async def test_same_request_id_is_applied_once(stub):
    first = await increment(stub, "once", 7, request_id="req-1")
    repeats = [await increment(stub, "once", 7, request_id="req-1") for _ in range(3)]

    assert first == 7
    assert repeats == [7, 7, 7]
    assert await get_value(stub, "once") == 7


async def test_concurrent_same_request_id_is_applied_once(stub):
    results = await asyncio.gather(
        *(increment(stub, "race", 3, request_id="same") for _ in range(10))
    )

    assert results == [3] * 10
    assert await get_value(stub, "race") == 3


async def test_repeat_returns_stored_value_after_later_increments(stub):
    await increment(stub, "history", 1, request_id="early")
    await increment(stub, "history", 10)

    repeated = await increment(stub, "history", 1, request_id="early")

    assert repeated == 1
    assert await get_value(stub, "history") == 11


async def test_empty_request_id_is_not_deduplicated(stub):
    await increment(stub, "plain", 1)
    await increment(stub, "plain", 1)

    assert await get_value(stub, "plain") == 2


@pytest.mark.parametrize(
    ("name", "delta"), [("reused", 2), ("other-counter", 1)], ids=["delta", "name"]
)
async def test_request_id_reused_for_other_increment_is_invalid(stub, name, delta):
    await increment(stub, "reused", 1, request_id="key-1")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await increment(stub, name, delta, request_id="key-1")

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value).startswith("request_id:")
    assert field_violations(caught.value) == ["request_id"]
    assert await get_value(stub, "reused") == 1


async def test_request_record_lives_24_hours(stub, etcd, servicer):
    await increment(stub, "leased", 1, request_id="lease-check")

    record = await etcd.get(servicer.store.request_key("lease-check"))

    assert record is not None
    assert record.lease != 0
    assert await etcd.lease_time_left(record.lease) >= REQUEST_RETENTION


async def test_lost_request_lease_is_granted_again(stub, etcd, servicer):
    await increment(stub, "relet", 1, request_id="before")
    old = await etcd.get(servicer.store.request_key("before"))
    assert old is not None
    await etcd.revoke_lease(old.lease)

    value = await increment(stub, "relet", 1, request_id="after")

    new = await etcd.get(servicer.store.request_key("after"))
    assert value == 2
    assert new is not None
    assert new.lease not in {0, old.lease}


async def test_overflow_is_out_of_range(stub, etcd, servicer):
    await etcd.put(servicer.store.value_key("huge"), str(INT64_MAX - 1))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await increment(stub, "huge", 2)

    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert details(caught.value).startswith("delta:")
    assert await get_value(stub, "huge") == INT64_MAX - 1


async def test_increment_up_to_int64_max_succeeds(stub, etcd, servicer):
    await etcd.put(servicer.store.value_key("edge"), str(INT64_MAX - 1))

    value = await increment(stub, "edge", 1)

    assert value == INT64_MAX


async def test_etcd_down_gives_unavailable(stub, etcd_server):
    etcd_server.kill()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_value(stub, "any")

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Traceback" not in details(caught.value)


# --- listing -----------------------------------------------------------------


async def test_list_counters_walks_every_page(stub):
    names = [f"page-{index:02d}" for index in range(23)]
    for index, name in enumerate(names):
        await increment(stub, name, index + 1)

    seen: list[counter_pb2.Counter] = []
    token = ""
    pages = 0
    while True:
        response = await stub.ListCounters(
            counter_pb2.ListCountersRequest(page_size=5, page_token=token)
        )
        seen.extend(response.counters)
        pages += 1
        token = response.next_page_token
        if not token:
            break

    assert [counter.name for counter in seen] == names
    assert [counter.value for counter in seen] == list(range(1, 24))
    assert pages == 5


async def test_list_counters_default_page_size(stub):
    await increment(stub, "a")
    await increment(stub, "b")

    response = await stub.ListCounters(counter_pb2.ListCountersRequest())

    assert [counter.name for counter in response.counters] == ["a", "b"]
    assert response.next_page_token == ""


async def test_list_counters_exact_page_has_no_next_token(stub):
    for name in ("x1", "x2", "x3"):
        await increment(stub, name)

    response = await stub.ListCounters(counter_pb2.ListCountersRequest(page_size=3))

    assert len(response.counters) == 3
    assert response.next_page_token == ""


# --- invalid arguments -------------------------------------------------------

LONG_NAME = "n" * 65
INVALID_CASES = [
    ("Increment", counter_pb2.IncrementRequest(name="", delta=1), "name"),
    ("Increment", counter_pb2.IncrementRequest(name=LONG_NAME, delta=1), "name"),
    ("Increment", counter_pb2.IncrementRequest(name="a/b", delta=1), "name"),
    ("Increment", counter_pb2.IncrementRequest(name="a b", delta=1), "name"),
    ("Increment", counter_pb2.IncrementRequest(name="café", delta=1), "name"),
    ("Increment", counter_pb2.IncrementRequest(name="ok", delta=0), "delta"),
    ("Increment", counter_pb2.IncrementRequest(name="ok", delta=1_000_001), "delta"),
    ("Increment", counter_pb2.IncrementRequest(name="ok", delta=-1_000_001), "delta"),
    ("Increment", counter_pb2.IncrementRequest(name="ok", delta=2**63 - 1), "delta"),
    (
        "Increment",
        counter_pb2.IncrementRequest(name="ok", delta=1, request_id="r" * 65),
        "request_id",
    ),
    (
        "Increment",
        counter_pb2.IncrementRequest(name="ok", delta=1, request_id="has.dot"),
        "request_id",
    ),
    ("GetCounter", counter_pb2.GetCounterRequest(name=""), "name"),
    ("GetCounter", counter_pb2.GetCounterRequest(name=LONG_NAME), "name"),
    ("GetCounter", counter_pb2.GetCounterRequest(name="bad\nname"), "name"),
    ("ListCounters", counter_pb2.ListCountersRequest(page_size=-1), "page_size"),
    ("ListCounters", counter_pb2.ListCountersRequest(page_size=1001), "page_size"),
    ("ListCounters", counter_pb2.ListCountersRequest(page_token="!!"), "page_token"),
    ("ListCounters", counter_pb2.ListCountersRequest(page_token="YQ=="), "page_token"),
    ("ListCounters", counter_pb2.ListCountersRequest(page_token="L2E"), "page_token"),
    (
        "ListCounters",
        counter_pb2.ListCountersRequest(page_token="x" * 200),
        "page_token",
    ),
    ("WatchCounter", counter_pb2.WatchCounterRequest(name=""), "name"),
    ("WatchCounter", counter_pb2.WatchCounterRequest(name=LONG_NAME), "name"),
    ("WatchCounter", counter_pb2.WatchCounterRequest(name="a*"), "name"),
]


async def call_method(stub: Stub, method: str, request: Any) -> None:
    """Call a unary method, or read the first message of WatchCounter."""
    if method == "WatchCounter":
        async for _ in stub.WatchCounter(request):
            return
        return
    await getattr(stub, method)(request)


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    INVALID_CASES,
    ids=[f"{method}-{index}" for index, (method, _, _) in enumerate(INVALID_CASES)],
)
async def test_invalid_argument_names_field(stub, method, request_message, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_method(stub, method, request_message)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value).startswith(f"{field}:")
    assert field_violations(caught.value) == [field]


async def test_invalid_name_message_states_limit(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_value(stub, "n" * 70)

    assert details(caught.value) == (
        "name: must be 1 to 64 characters matching ^[A-Za-z0-9_.-]+$; got 70 characters"
    )


# --- watch -------------------------------------------------------------------


async def test_watch_streams_successive_values(stub):
    call = stub.WatchCounter(counter_pb2.WatchCounterRequest(name="live"))
    first = await call.read()
    await increment(stub, "live", 1)
    await increment(stub, "live2", 100)  # shares the key prefix; must not show
    await increment(stub, "live", 2)
    await increment(stub, "live", 3)

    updates = [await asyncio.wait_for(call.read(), 10) for _ in range(3)]
    call.cancel()

    assert first.counter.value == 0
    assert first.revision == 0
    assert [update.counter.value for update in updates] == [1, 3, 6]
    assert {update.counter.name for update in updates} == {"live"}
    revisions = [update.revision for update in updates]
    assert revisions == sorted(set(revisions))


async def test_watch_starts_with_current_value(stub):
    await increment(stub, "existing", 41)

    call = stub.WatchCounter(counter_pb2.WatchCounterRequest(name="existing"))
    first = await call.read()
    await increment(stub, "existing", 1)
    second = await asyncio.wait_for(call.read(), 10)
    call.cancel()

    assert first.counter.value == 41
    assert first.revision > 0
    assert second.counter.value == 42
    assert second.revision > first.revision


async def test_watch_reads_again_after_compaction(
    etcd, etcd_server, mesh_config, caplog
):
    caplog.set_level(logging.INFO, logger="counter_svc.watch")
    proxy = TcpProxy("127.0.0.1", etcd_server.client_port)
    await proxy.start()
    proxied = dataclasses.replace(
        mesh_config,
        etcd_endpoints=MeshConfig.from_env({}, etcd_endpoints=proxy.url).etcd_endpoints,
    )
    writer = CounterStore(etcd, mesh_config.namespace)
    async with EtcdClient(proxied) as watched_etcd:
        values = watch_counter(CounterStore(watched_etcd, mesh_config.namespace), "gap")
        first = await anext(values)
        await writer.increment("gap", 1)
        second = await asyncio.wait_for(anext(values), 10)

        # The watch misses these changes, and compaction removes them from the
        # history that a resumed watch would replay.
        proxy.cut()
        for _ in range(3):
            await writer.increment("gap", 10)
        await etcd.compact(await etcd.revision())
        proxy.heal()
        recovered = await asyncio.wait_for(anext(values), 30)
        await writer.increment("gap", 100)
        after = await asyncio.wait_for(anext(values), 10)
        await values.aclose()
    await proxy.stop()

    assert first.value == 0
    assert second.value == 1
    assert recovered.value == 31
    assert after.value == 131
    assert after.revision > recovered.revision
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("watch compacted") for message in messages)


# --- real processes ----------------------------------------------------------


async def test_process_reply_names_instance(processes, etcd):
    process = await processes.start(etcd, "counter_svc", SERVICE_NAME)

    async with grpc.aio.insecure_channel(process.address) as channel:
        stub = counter_pb2_grpc.CounterServiceStub(channel)
        call = stub.Increment(counter_pb2.IncrementRequest(name="traced", delta=1))
        response = await call
        trailers = dict(await call.trailing_metadata())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetCounter(counter_pb2.GetCounterRequest(name=""))

    error_trailers: dict[str, Any] = dict(caught.value.trailing_metadata())  # type: ignore[arg-type]
    assert response.counter.value == 1
    assert trailers[INSTANCE_METADATA_KEY] == process.instance_id
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_trailers[INSTANCE_METADATA_KEY] == process.instance_id


async def test_replicas_share_counters(processes, etcd):
    first = await processes.start(etcd, "counter_svc", SERVICE_NAME)
    second = await processes.start(etcd, "counter_svc", SERVICE_NAME)

    async with (
        grpc.aio.insecure_channel(first.address) as first_channel,
        grpc.aio.insecure_channel(second.address) as second_channel,
    ):
        first_stub = counter_pb2_grpc.CounterServiceStub(first_channel)
        second_stub = counter_pb2_grpc.CounterServiceStub(second_channel)
        await asyncio.gather(
            *(increment(first_stub, "shared") for _ in range(10)),
            *(increment(second_stub, "shared") for _ in range(10)),
        )
        await increment(first_stub, "shared", 5, request_id="cross")
        repeated = await increment(second_stub, "shared", 5, request_id="cross")
        values = [await get_value(stub, "shared") for stub in (first_stub, second_stub)]

    assert first.instance_id != second.instance_id
    assert repeated == 25
    assert values == [25, 25]


async def test_sigterm_removes_registration(processes, etcd, mesh_config):
    process = await processes.start(etcd, "counter_svc", SERVICE_NAME)

    status = process.stop()

    key = mesh_config.service_prefix(SERVICE_NAME) + process.instance_id
    assert status == 0
    assert await etcd.get(key) is None
