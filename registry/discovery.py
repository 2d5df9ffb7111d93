"""Discovery: a live set of endpoints for one service, kept by list + watch.

The resolver lists `<namespace>/services/<service>/`, then watches from the
listed revision + 1. When the watch breaks it resumes from the last revision
it saw. When that revision has been compacted it lists again and diffs the
result against its cache, so that removals during the gap are not missed.
While etcd cannot be reached, the cache keeps the last known endpoints: an
etcd error never empties a good endpoint set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from registry.backoff import Backoff
from registry.config import MeshConfig
from registry.errors import MeshError, RevisionCompactedError
from registry.etcd import EtcdClient, KeyValue, WatchBatch
from registry.model import Endpoint, RecordError, decode_record

logger = logging.getLogger(__name__)

EventKind = Literal["added", "removed", "updated"]
Listener = Callable[[Mapping[str, Endpoint]], None]

# At most one warning per key in this many seconds for undecodable values.
_WARNING_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class DiscoveryEvent:
    """One change in a service's endpoint set, with the etcd revision."""

    kind: EventKind
    endpoint: Endpoint
    revision: int


@dataclass
class ResolverStats:
    """Counters of one resolver's life, for logs, metrics and tests."""

    lists: int = 0
    watch_restarts: int = 0
    compactions: int = 0
    skipped_values: int = 0
    revision: int = 0


@dataclass
class _WarningLimiter:
    last: dict[str, float] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> int | None:
        """Return how many warnings were suppressed, or None to stay quiet."""
        if now - self.last.get(key, -_WARNING_INTERVAL) < _WARNING_INTERVAL:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return None
        self.last[key] = now
        return self.suppressed.pop(key, 0)


class Resolver:
    """The endpoints of one service, updated from etcd in the background."""

    def __init__(self, etcd: EtcdClient, config: MeshConfig, service: str) -> None:
        self.service = service
        self.prefix = config.service_prefix(service)
        self._etcd = etcd
        self._namespace = config.namespace
        self._by_key: dict[str, Endpoint] = {}
        self._listeners: list[Listener] = []
        self._queues: set[asyncio.Queue[DiscoveryEvent]] = set()
        self._ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._limiter = _WarningLimiter()
        self._task: asyncio.Task[None] | None = None
        self.stats = ResolverStats()

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def ready(self) -> bool:
        """True once the first list has completed."""
        return self._ready.is_set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name=f"resolver-{self.service}"
            )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def snapshot(self) -> dict[str, Endpoint]:
        """Return the current endpoints by instance id."""
        return {endpoint.instance_id: endpoint for endpoint in self._by_key.values()}

    def add_listener(self, listener: Listener) -> None:
        """Call listener with the new snapshot after every change."""
        self._listeners.append(listener)

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the first list; raise TimeoutError after timeout."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    async def wait_for(
        self, predicate: Callable[[Mapping[str, Endpoint]], bool], timeout: float
    ) -> None:
        """Wait until predicate holds for the snapshot; TimeoutError after timeout."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.snapshot()))

    async def subscribe(self) -> AsyncIterator[DiscoveryEvent]:
        """Yield "added" for each current endpoint, then every later change."""
        queue: asyncio.Queue[DiscoveryEvent] = asyncio.Queue()
        for endpoint in self._by_key.values():
            queue.put_nowait(DiscoveryEvent("added", endpoint, self.stats.revision))
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    # --- background loop -----------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(initial=0.2, maximum=5.0)
        must_list = True
        while True:
            try:
                if must_list:
                    await self._list()
                    must_list = False
                await self._watch()
            except RevisionCompactedError as exc:
                self.stats.compactions += 1
                logger.info(
                    "watch on %s hit compaction at %d; listing again",
                    self.prefix,
                    exc.compact_revision,
                )
                must_list = True
            except MeshError as exc:
                self.stats.watch_restarts += 1
                delay = backoff.next_delay()
                logger.warning(
                    "discovery of %s failed; keeping %d endpoints, retrying in %.1f s: %s",
                    self.service,
                    len(self._by_key),
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
            else:
                backoff.reset()

    async def _list(self) -> None:
        kvs, revision = await self._etcd.get_prefix(self.prefix)
        self.stats.lists += 1
        fresh: dict[str, Endpoint] = {}
        for kv in kvs:
            endpoint = self._decode(kv)
            if endpoint is not None:
                fresh[kv.key] = endpoint
        events = [
            DiscoveryEvent("removed", endpoint, revision)
            for key, endpoint in self._by_key.items()
            if key not in fresh
        ]
        for key, endpoint in fresh.items():
            old = self._by_key.get(key)
            if old is None:
                events.append(DiscoveryEvent("added", endpoint, revision))
            elif old != endpoint:
                events.append(DiscoveryEvent("updated", endpoint, revision))
        self._by_key = fresh
        self.stats.revision = revision
        self._ready.set()
        await self._publish(events)

    async def _watch(self) -> None:
        batches = self._etcd.watch_prefix(
            self.prefix, start_revision=self.stats.revision + 1
        )
        async with contextlib.aclosing(batches):
            async for batch in batches:
                await self._apply(batch)

    async def _apply(self, batch: WatchBatch) -> None:
        events: list[DiscoveryEvent] = []
        for event in batch.events:
            key = event.kv.key
            if event.kind == "delete":
                removed = self._by_key.pop(key, None)
                if removed is not None:
                    events.append(DiscoveryEvent("removed", removed, batch.revision))
                continue
            endpoint = self._decode(event.kv)
            old = self._by_key.pop(key, None)
            if endpoint is None:
                if old is not None:
                    events.append(DiscoveryEvent("removed", old, batch.revision))
                continue
            self._by_key[key] = endpoint
            kind: EventKind = "added" if old is None else "updated"
            events.append(DiscoveryEvent(kind, endpoint, batch.revision))
        self.stats.revision = max(self.stats.revision, batch.revision)
        await self._publish(events)

    def _decode(self, kv: KeyValue) -> Endpoint | None:
        suffix = kv.key[len(self.prefix) :]
        if not suffix or "/" in suffix:
            return None
        try:
            return decode_record(
                self.service,
                kv.key,
                kv.value,
                lease=kv.lease,
                mod_revision=kv.mod_revision,
            )
        except RecordError as exc:
            self.stats.skipped_values += 1
            suppressed = self._limiter.allow(kv.key, time.monotonic())
            if suppressed is not None:
                logger.warning(
                    "skipping invalid registration (%d similar warnings suppressed): %s",
                    suppressed,
                    exc,
                )
            return None

    async def _publish(self, events: list[DiscoveryEvent]) -> None:
        if not events:
            return
        snapshot = self.snapshot()
        for listener in self._listeners:
            try:
                listener(snapshot)
            except Exception:
                logger.exception("discovery listener for %s failed", self.service)
        for queue in self._queues:
            for event in events:
                queue.put_nowait(event)
        async with self._changed:
            self._changed.notify_all()
