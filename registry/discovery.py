"""Discovery: a live set of endpoints for one service, kept by list + watch.

The resolver lists `<namespace>/services/<service>/`, then watches from the
listed revision + 1. When the watch breaks it resumes from the last revision
it saw. When that revision has been compacted it lists again and diffs the
result against its cache, so that removals during the gap are not missed.
A watchdog sends a progress request on a watch that has been quiet for
`watchdog_interval` seconds and lists again if no reply comes. While etcd
cannot be reached, the cache keeps the last known endpoints: an etcd error
never empties a good endpoint set.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from registry import metrics
from registry.backoff import Backoff
from registry.config import MeshConfig
from registry.errors import EtcdRequestError, MeshError, RevisionCompactedError
from registry.etcd import EtcdClient, KeyValue, PrefixWatch, WatchBatch
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
    silent_watches: int = 0
    resets: int = 0
    cache_mismatches: int = 0
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


class _StoreResetError(MeshError):
    """etcd's revision went backwards: it restarted with an empty data directory."""


class _SilentWatchError(MeshError):
    """The watch stream stopped replying to progress requests."""


class Resolver:
    """The endpoints of one service, updated from etcd in the background."""

    def __init__(
        self,
        etcd: EtcdClient,
        config: MeshConfig,
        service: str,
        *,
        watchdog_interval: float = 10.0,
        watchdog_timeout: float = 5.0,
    ) -> None:
        self.service = service
        self.watchdog_interval = watchdog_interval
        self.watchdog_timeout = watchdog_timeout
        self.last_retry_delays: collections.deque[float] = collections.deque(maxlen=32)
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
        self._lease_ttl = config.lease_ttl
        self._backoff = Backoff(initial=0.5, maximum=5.0)
        self._must_list = True
        self._verify_after_resume = False
        self._hold_missing = False
        self._silent = False
        self._last_response = 0.0
        self._watch_stream: PrefixWatch | None = None
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
        while True:
            try:
                if self._must_list:
                    await self._list()
                await self._watch()
            except RevisionCompactedError as exc:
                self.stats.compactions += 1
                self._must_list = True
                await self._pause(f"watch hit compaction at {exc.compact_revision}")
            except _StoreResetError as exc:
                self.stats.resets += 1
                self._must_list = True
                self._hold_missing = True
                await self._pause(str(exc))
            except MeshError as exc:
                self.stats.watch_restarts += 1
                self._verify_after_resume = True
                await self._pause(str(exc))

    async def _pause(self, reason: str) -> None:
        metrics.WATCH_RESTARTS.labels(self.service).inc()
        # Jitter spreads the re-lists and re-watches of many clients after a
        # shared outage, so that they do not reach etcd in one burst.
        delay = self._backoff.next_delay()
        logger.warning(
            "discovery of %s: %s; keeping %d endpoints, retrying in %.2f s",
            self.service,
            reason,
            len(self._by_key),
            delay,
        )
        self.last_retry_delays.append(delay)
        await asyncio.sleep(delay)

    async def _list(self) -> None:
        kvs, revision = await self._etcd.get_prefix(self.prefix)
        self.stats.lists += 1
        metrics.RELISTS.labels(self.service).inc()
        fresh: dict[str, Endpoint] = {}
        for kv in kvs:
            endpoint = self._decode(kv)
            if endpoint is not None:
                fresh[kv.key] = endpoint
        if self._hold_missing:
            self._hold(fresh)
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
        self._must_list = False
        self.stats.revision = revision
        self._ready.set()
        await self._publish(events)

    def _hold(self, fresh: dict[str, Endpoint]) -> None:
        """Keep endpoints missing after an etcd reset until they can return.

        After etcd restarts with an empty data directory every instance
        registers again within about one lease TTL. Dropping the missing
        endpoints at once would empty a good endpoint set, so they stay for
        two TTLs, and a later list drops those that did not come back.
        """
        self._hold_missing = False
        held = {
            key: endpoint for key, endpoint in self._by_key.items() if key not in fresh
        }
        if not held:
            return
        fresh.update(held)
        hold_for = max(2.0 * self._lease_ttl, 5.0)
        logger.warning(
            "etcd of %s was reset; holding %d missing endpoints for %.0f s",
            self.service,
            len(held),
            hold_for,
        )
        loop = asyncio.get_running_loop()
        loop.call_later(hold_for, self._request_list)

    def _request_list(self) -> None:
        self._must_list = True
        if self._watch_stream is not None:
            self._watch_stream.cancel()

    async def _watch(self) -> None:
        watch = self._etcd.watch_prefix(
            self.prefix, start_revision=self.stats.revision + 1
        )
        self._watch_stream = watch
        self._silent = False
        self._last_response = asyncio.get_running_loop().time()
        watchdog = asyncio.create_task(self._watchdog(watch))
        try:
            async for batch in watch:
                self._last_response = asyncio.get_running_loop().time()
                await self._apply(batch)
                if self._verify_after_resume and not self._must_list:
                    self._verify_after_resume = False
                    await self._verify_cache()
                if self._must_list:
                    return
        finally:
            watchdog.cancel()
            self._watch_stream = None
        if self._silent:
            self._must_list = True
            msg = f"watch on {self.prefix} went silent"
            raise _SilentWatchError(msg)

    async def _verify_cache(self) -> None:
        """List once after a resumed watch and list again on any difference.

        etcd restarted with an empty data directory can reach a revision
        above the one the watch resumes from before the watch reconnects. The
        revision then never goes back, and the resumed watch cannot report
        the keys that vanished. Reading the prefix at the revision that the
        cache reflects returns exactly the cache on the same store, and other
        keys on a store that was reset.
        """
        try:
            kvs, _ = await self._etcd.get_prefix(
                self.prefix, revision=self.stats.revision
            )
        except EtcdRequestError as exc:
            # A compacted revision needs a plain list. Any other error here
            # (such as a future revision) means the store was reset.
            if "compacted" in str(exc):
                raise RevisionCompactedError(self.stats.revision) from exc
            self._hold_missing = True
            self._must_list = True
            return
        stored = {kv.key for kv in kvs if self._decodes(kv)}
        if stored != set(self._by_key):
            self.stats.cache_mismatches += 1
            # The store was most likely reset, and its instances are
            # registering again: hold the missing ones, as after a reset.
            self._hold_missing = True
            logger.warning(
                "discovery of %s: the cache differs from etcd after a resumed "
                "watch; listing again",
                self.service,
            )
            self._must_list = True

    def _decodes(self, kv: KeyValue) -> bool:
        suffix = kv.key[len(self.prefix) :]
        if not suffix or "/" in suffix:
            return False
        try:
            decode_record(self.service, kv.key, kv.value)
        except RecordError:
            return False
        return True

    async def _watchdog(self, watch: PrefixWatch) -> None:
        """Cancel a watch that stops replying to progress requests."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.watchdog_interval)
            if loop.time() - self._last_response < self.watchdog_interval:
                continue
            sent = loop.time()
            watch.request_progress()
            await asyncio.sleep(self.watchdog_timeout)
            if self._last_response < sent:
                self.stats.silent_watches += 1
                self._silent = True
                watch.cancel()
                return

    async def _apply(self, batch: WatchBatch) -> None:
        if batch.revision < self.stats.revision:
            msg = (
                f"etcd revision went back from {self.stats.revision} to "
                f"{batch.revision}, so its data was reset"
            )
            raise _StoreResetError(msg)
        self._backoff.reset()
        if batch.created:
            # The created reply's revision is the store's, not the watch's
            # position: events between the two may still follow.
            return
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
            metrics.SKIPPED_VALUES.labels(self.service).inc()
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
