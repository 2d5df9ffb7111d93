"""Fan-out of counter values from WatchCounter streams to SSE clients.

The hub keeps one WatchCounter stream per counter name while at least one
client listens, and copies every value to each client's queue. When the
stream breaks, the hub sends each client a WatchInterrupted event and opens
a new stream after a capped, jittered backoff. WatchCounter starts with the current value, so a new
stream also repairs any value missed during the gap.

A slow client's queue drops its oldest entry when full. Each value is the
whole counter, not a change, so a client that misses one still ends up
showing the latest value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc.aio

from front.backends import CounterUpdate
from registry.backoff import Backoff

logger = logging.getLogger(__name__)

WatchOpener = Callable[[str], AsyncIterator[CounterUpdate]]
QUEUE_SIZE = 16


@dataclass(frozen=True, slots=True)
class WatchInterrupted:
    """The stream of a counter broke, and the hub retries after retry_in seconds."""

    name: str
    message: str
    retry_in: float


HubEvent = CounterUpdate | WatchInterrupted


@dataclass(frozen=True, slots=True)
class FeedStats:
    """State of the stream behind one counter name."""

    subscribers: int
    streams_opened: int
    latest: CounterUpdate | None


class _Feed:
    """One counter's stream and the queues of the clients that listen to it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.queues: set[asyncio.Queue[HubEvent]] = set()
        self.latest: CounterUpdate | None = None
        self.streams_opened = 0
        self.task: asyncio.Task[None] | None = None

    def publish(self, event: HubEvent) -> None:
        if isinstance(event, CounterUpdate):
            self.latest = event
        for queue in self.queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)


class CounterHub:
    """One shared WatchCounter stream per counter, for all of its SSE clients."""

    def __init__(
        self,
        open_watch: WatchOpener,
        *,
        queue_size: int = QUEUE_SIZE,
        new_backoff: Callable[[], Backoff] = lambda: Backoff(initial=0.2, maximum=5.0),
    ) -> None:
        self._open_watch = open_watch
        self._queue_size = queue_size
        self._new_backoff = new_backoff
        self._feeds: dict[str, _Feed] = {}

    @contextlib.asynccontextmanager
    async def subscribe(self, name: str) -> AsyncIterator[AsyncIterator[HubEvent]]:
        """Open an iterator of one counter's events, starting with its latest value."""
        feed = self._feeds.get(name)
        if feed is None:
            feed = self._start_feed(name)
        queue: asyncio.Queue[HubEvent] = asyncio.Queue(self._queue_size)
        if feed.latest is not None:
            queue.put_nowait(feed.latest)
        feed.queues.add(queue)
        try:
            yield _drain(queue)
        finally:
            feed.queues.discard(queue)
            if not feed.queues:
                # No await here: this often runs while an SSE response is
                # being cancelled, and the feed's task ends on its own.
                self._forget_feed(feed)

    def statistics(self) -> dict[str, FeedStats]:
        """Return the state of each open feed by counter name."""
        return {
            name: FeedStats(len(feed.queues), feed.streams_opened, feed.latest)
            for name, feed in self._feeds.items()
        }

    async def close(self) -> None:
        """Cancel every stream and wait for the streams to end."""
        tasks = [feed.task for feed in self._feeds.values() if feed.task is not None]
        for feed in list(self._feeds.values()):
            self._forget_feed(feed)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start_feed(self, name: str) -> _Feed:
        feed = _Feed(name)
        feed.task = asyncio.create_task(self._run(feed), name=f"watch-counter-{name}")
        self._feeds[name] = feed
        return feed

    def _forget_feed(self, feed: _Feed) -> None:
        if self._feeds.get(feed.name) is feed:
            del self._feeds[feed.name]
        if feed.task is not None:
            feed.task.cancel()

    async def _run(self, feed: _Feed) -> None:
        backoff = self._new_backoff()
        while True:
            feed.streams_opened += 1
            try:
                async for update in self._open_watch(feed.name):
                    backoff.reset()
                    feed.publish(update)
                reason = "the stream ended"
            except grpc.aio.AioRpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:
                # The feed must outlive any one failure, because clients stay
                # connected and expect values to resume.
                reason = str(exc) or type(exc).__name__
            delay = backoff.next_delay()
            logger.warning(
                "watch on counter %r broke (%s); reconnecting in %.1f s",
                feed.name,
                reason,
                delay,
            )
            feed.publish(WatchInterrupted(feed.name, reason, delay))
            await asyncio.sleep(delay)


async def _drain(queue: asyncio.Queue[HubEvent]) -> AsyncIterator[HubEvent]:
    while True:
        yield await queue.get()
