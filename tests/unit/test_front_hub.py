"""CounterHub: one WatchCounter stream per counter, fanned out to every client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio

from front.backends import CounterUpdate
from front.counter_hub import CounterHub, HubEvent, WatchInterrupted
from registry.backoff import Backoff


class FakeWatches:
    """Fake WatchCounter streams that the test feeds with values or breaks."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.queues: dict[str, asyncio.Queue[CounterUpdate | Exception | None]] = {}
        self.open_event = asyncio.Event()

    async def open(self, name: str):
        self.opened.append(name)
        queue: asyncio.Queue[CounterUpdate | Exception | None] = asyncio.Queue()
        self.queues[name] = queue
        self.open_event.set()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            if self.queues.get(name) is queue:
                del self.queues[name]

    async def wait_open(self, name: str, count: int = 1) -> None:
        while self.opened.count(name) < count or name not in self.queues:
            self.open_event.clear()
            await asyncio.wait_for(self.open_event.wait(), 5)

    def push(self, name: str, value: int, revision: int = 0) -> None:
        self.queues[name].put_nowait(CounterUpdate(name, value, revision or value))

    def fail(self, name: str, error: Exception) -> None:
        self.queues[name].put_nowait(error)


def tiny_backoff() -> Backoff:
    return Backoff(initial=0.001, maximum=0.01)


async def next_event(events: AsyncIterator[HubEvent]) -> HubEvent:
    return await asyncio.wait_for(anext(events), 5)


async def next_value(events: AsyncIterator[HubEvent]) -> CounterUpdate:
    event = await next_event(events)
    assert isinstance(event, CounterUpdate), event
    return event


async def test_clients_share_one_stream():
    watches = FakeWatches()
    hub = CounterHub(watches.open, new_backoff=tiny_backoff)

    async with hub.subscribe("clicks") as first, hub.subscribe("clicks") as second:
        await watches.wait_open("clicks")
        watches.push("clicks", 7)

        assert (await next_value(first)).value == 7
        assert (await next_value(second)).value == 7
        stats = hub.statistics()["clicks"]
        assert stats.subscribers == 2
        assert stats.streams_opened == 1
    await hub.close()

    assert watches.opened == ["clicks"]


async def test_late_client_gets_latest_value():
    watches = FakeWatches()
    hub = CounterHub(watches.open, new_backoff=tiny_backoff)

    async with hub.subscribe("clicks") as first:
        await watches.wait_open("clicks")
        watches.push("clicks", 3)
        await next_event(first)
        async with hub.subscribe("clicks") as late:
            event = await next_event(late)

    assert event == CounterUpdate("clicks", 3, 3)
    await hub.close()


async def test_counters_get_separate_streams():
    watches = FakeWatches()
    hub = CounterHub(watches.open, new_backoff=tiny_backoff)

    async with hub.subscribe("a") as a_events, hub.subscribe("b") as b_events:
        await watches.wait_open("a")
        await watches.wait_open("b")
        watches.push("b", 2)
        watches.push("a", 1)

        assert (await next_event(a_events)).name == "a"
        assert (await next_event(b_events)).name == "b"
    await hub.close()


async def test_broken_stream_reconnects():
    watches = FakeWatches()
    hub = CounterHub(watches.open, new_backoff=tiny_backoff)
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        "replica went away",
        None,
    )

    async with hub.subscribe("clicks") as events:
        await watches.wait_open("clicks")
        watches.fail("clicks", error)
        interrupted = await next_event(events)
        await watches.wait_open("clicks", count=2)
        watches.push("clicks", 9)
        resumed = await next_value(events)

    assert isinstance(interrupted, WatchInterrupted)
    assert "UNAVAILABLE" in interrupted.message
    assert "replica went away" in interrupted.message
    assert resumed.value == 9
    assert watches.opened == ["clicks", "clicks"]
    await hub.close()


async def test_stream_that_ends_is_reopened():
    watches = FakeWatches()
    hub = CounterHub(watches.open, new_backoff=tiny_backoff)

    async with hub.subscribe("clicks") as events:
        await watches.wait_open("clicks")
        watches.queues["clicks"].put_nowait(None)
        interrupted = await next_event(events)
        await watches.wait_open("clicks", count=2)

    assert isinstance(interrupted, WatchInterrupted)
    assert interrupted.message == "the stream ended"
    await hub.close()


async def test_last_client_leaving_closes_stream():
    watches = FakeWatches()
    hub = CounterHub(watches.open, new_backoff=tiny_backoff)

    async with hub.subscribe("clicks"):
        await watches.wait_open("clicks")
    for _ in range(100):
        if "clicks" not in watches.queues:
            break
        await asyncio.sleep(0.01)

    assert hub.statistics() == {}
    assert "clicks" not in watches.queues
    await hub.close()


async def test_slow_client_keeps_newest_values():
    watches = FakeWatches()
    hub = CounterHub(watches.open, queue_size=3, new_backoff=tiny_backoff)

    async with hub.subscribe("clicks") as slow, hub.subscribe("clicks") as fast:
        await watches.wait_open("clicks")
        for value in range(1, 11):
            watches.push("clicks", value)
            assert (await next_value(fast)).value == value
        received = [(await next_value(slow)).value for _ in range(3)]

    assert received == [8, 9, 10]
    await hub.close()
