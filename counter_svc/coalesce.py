"""Coalesced increments: the queued increments of one counter share one transaction.

Each counter has at most one transaction in flight in this process.
Increments that arrive meanwhile wait in the counter's queue, and the next
transaction takes all of them, up to MAX_BATCH. Within a batch, values are
assigned in arrival order (value_i = base + delta_1 + ... + delta_i), and
the counter and the result of every request_id are written in one
transaction, guarded by the counter's mod_revision and by the absence of
each new request key. When another replica wrote first, the transaction's
failure branch returns the fresh counter and records, and the whole batch is
planned again.

Each caller still gets its own value and its own error: a request that would
overflow int64 or that reuses a request_id for another increment fails alone,
and the rest of the batch is applied. A request_id that appears twice in one
batch is applied once and both callers get the same result.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass, field

from counter_svc.errors import ContentionError, CounterServiceError
from counter_svc.idempotency import RequestRecord
from counter_svc.storage import (
    MAX_ATTEMPTS,
    CounterStore,
    CounterValue,
    backoff_delay,
    check_same_request,
    checked_sum,
    counter_value,
    first_kv,
    replay,
)
from registry.errors import EtcdRequestError
from registry.etcd import (
    KeyValue,
    TxnResult,
    compare_absent,
    compare_mod_revision,
    op_get,
    op_put,
)

logger = logging.getLogger(__name__)

# etcd 3.5 rejects a transaction with more than 128 operations in one branch
# (the --max-txn-ops default), and a batch writes the counter plus one
# record per request.
MAX_BATCH = 100
# Counters whose last written value is kept, to skip the read before a batch.
MAX_REMEMBERED = 1024


@dataclass(eq=False)
class _Pending:
    """One caller's increment, waiting for its batch."""

    delta: int
    request_id: str
    future: asyncio.Future[CounterValue]


@dataclass
class _Plan:
    """The writes of one attempt of a batch, and the outcome for each caller.

    An outcome is an int for a value written by this attempt (its revision
    is known only after the commit), a CounterValue for a replayed result,
    or the error to raise to that caller.
    """

    base: CounterValue
    value: int
    outcomes: list[int | CounterValue | CounterServiceError] = field(
        default_factory=list
    )
    records: dict[str, RequestRecord] = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        """True when at least one increment is applied by this attempt."""
        return any(isinstance(outcome, int) for outcome in self.outcomes)


class IncrementBatcher:
    """Increments through CounterStore, merged per counter into one transaction."""

    def __init__(self, store: CounterStore, *, max_batch: int = MAX_BATCH) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            msg = f"max_batch: use 1 to {MAX_BATCH}, got {max_batch}"
            raise ValueError(msg)
        self.store = store
        self.max_batch = max_batch
        # Committed transactions, and those that lost to another writer.
        self.batches = 0
        self.conflicts = 0
        self._queues: dict[str, list[_Pending]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        # The counter as this process last wrote it, least recent first. It
        # may be stale when another replica wrote since, which the
        # transaction's compare detects.
        self._written: collections.OrderedDict[str, KeyValue] = (
            collections.OrderedDict()
        )

    async def increment(
        self, name: str, delta: int, request_id: str = ""
    ) -> CounterValue:
        """Add delta with the next batch of this counter and return the new value.

        Raises what CounterStore.increment raises, for this request alone.
        """
        loop = asyncio.get_running_loop()
        pending = _Pending(delta, request_id, loop.create_future())
        self._queues.setdefault(name, []).append(pending)
        if name not in self._workers:
            self._workers[name] = loop.create_task(
                self._drain(name), name=f"increments-{name}"
            )
        return await pending.future

    async def close(self) -> None:
        """Cancel the running batches, so that their callers get CancelledError."""
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _drain(self, name: str) -> None:
        """Apply the queued batches of one counter until its queue is empty."""
        written = self._written.pop(name, None)
        batch: list[_Pending] = []
        try:
            while queue := self._queues.get(name):
                batch = [p for p in queue[: self.max_batch] if not p.future.done()]
                del queue[: self.max_batch]
                if not queue:
                    del self._queues[name]
                if batch:
                    written = await self._apply(name, batch, written)
        except asyncio.CancelledError:
            for pending in batch + self._queues.pop(name, []):
                pending.future.cancel()
            raise
        finally:
            self._workers.pop(name, None)
            if written is not None:
                self._written[name] = written
                if len(self._written) > MAX_REMEMBERED:
                    self._written.popitem(last=False)

    async def _apply(
        self,
        name: str,
        batch: list[_Pending],
        written: KeyValue | None,
    ) -> KeyValue | None:
        """Commit one batch, settle its futures and return the counter as written.

        The counter as this process last wrote it is used without reading
        it again. If another replica changed it meanwhile, the compare fails
        and the failure branch returns the current value.
        """
        try:
            return await self._commit(name, batch, written)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Errors of the whole batch (etcd unavailable, contention) go to
            # every caller in it, and the worker goes on with the next batch.
            logger.warning(
                "increment batch failed name=%s requests=%d error=%s",
                name,
                len(batch),
                exc,
            )
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return None

    async def _commit(
        self,
        name: str,
        batch: list[_Pending],
        written: KeyValue | None,
    ) -> KeyValue | None:
        store = self.store
        key = store.value_key(name)
        request_keys = list(
            dict.fromkeys(
                store.request_key(p.request_id) for p in batch if p.request_id
            )
        )
        # Without a read, every request key is assumed absent. compare_absent
        # in the transaction catches a request that was applied meanwhile.
        counter_kv = written
        records: dict[str, KeyValue | None] = dict.fromkeys(request_keys)
        assumed = written is not None
        if not assumed:
            counter_kv, records = await self._read(key, request_keys)

        lease_renewed = False
        for attempt in range(MAX_ATTEMPTS):
            plan = _plan(store, name, batch, counter_value(name, counter_kv), records)
            if not plan.writes and assumed:
                # Every request failed against an assumed value, so check it.
                counter_kv, records = await self._read(key, request_keys)
                assumed = False
                continue
            if not plan.writes:
                _settle(batch, plan, revision=plan.base.revision)
                return None

            lease = await store.lease.current() if plan.records else 0
            try:
                result = await self._write(plan, key, request_keys, lease)
            except EtcdRequestError:
                # etcd rejects a put whose lease has expired or was revoked.
                if lease == 0 or lease_renewed:
                    raise
                store.lease.discard(lease)
                lease_renewed = True
                continue

            if result.succeeded:
                self.batches += 1
                _settle(batch, plan, revision=result.revision)
                _log_batch(name, batch, plan, result.revision, attempt + 1)
                return _written(key, plan.value, result.revision, counter_kv)
            self.conflicts += 1
            assumed = False
            counter_kv, records = _found(result.ranges, request_keys)
            await asyncio.sleep(backoff_delay(attempt))
        raise ContentionError(
            "name",
            f"counter {name!r} was changed by other replicas during all "
            f"{MAX_ATTEMPTS} attempts of a batch of {len(batch)} increments; "
            "retry the call",
        )

    async def _read(
        self, key: str, request_keys: list[str]
    ) -> tuple[KeyValue | None, dict[str, KeyValue | None]]:
        reads = [op_get(key)] + [op_get(request_key) for request_key in request_keys]
        result = await self.store.etcd.txn([], reads)
        return _found(result.ranges, request_keys)

    async def _write(
        self, plan: _Plan, key: str, request_keys: list[str], lease: int
    ) -> TxnResult:
        """Write the plan if nothing changed; on failure, read everything again."""
        compare = [compare_mod_revision(key, plan.base.revision)]
        success = [op_put(key, str(plan.value))]
        for request_key, record in plan.records.items():
            compare.append(compare_absent(request_key))
            success.append(op_put(request_key, record.encode(), lease=lease))
        failure = [op_get(key)] + [op_get(request_key) for request_key in request_keys]
        return await self.store.etcd.txn(compare, success, failure)


def _found(
    ranges: tuple[tuple[KeyValue, ...], ...], request_keys: list[str]
) -> tuple[KeyValue | None, dict[str, KeyValue | None]]:
    """Split the reads of a transaction into the counter and its request records."""
    records = {
        request_key: first_kv(ranges, index + 1)
        for index, request_key in enumerate(request_keys)
    }
    return first_kv(ranges, 0), records


def _plan(
    store: CounterStore,
    name: str,
    batch: list[_Pending],
    base: CounterValue,
    records: dict[str, KeyValue | None],
) -> _Plan:
    """Assign each increment its value in order, or its replay or error."""
    plan = _Plan(base=base, value=base.value)
    claimed: dict[str, tuple[int, int]] = {}
    for pending in batch:
        request_id = pending.request_id
        stored = records.get(store.request_key(request_id)) if request_id else None
        try:
            if stored is not None:
                plan.outcomes.append(replay(stored, name, pending.delta, request_id))
            elif request_id in claimed:
                plan.outcomes.append(_repeat(claimed[request_id], name, pending))
            else:
                current = CounterValue(name, plan.value, base.revision)
                plan.value = checked_sum(current, pending.delta)
                plan.outcomes.append(plan.value)
                if request_id:
                    claimed[request_id] = (pending.delta, plan.value)
                    record = RequestRecord(name, pending.delta, plan.value)
                    plan.records[store.request_key(request_id)] = record
        except CounterServiceError as exc:
            plan.outcomes.append(exc)
    return plan


def _repeat(claim: tuple[int, int], name: str, pending: _Pending) -> int:
    """Return the value of a request_id applied earlier in the same batch."""
    delta, value = claim
    check_same_request(
        RequestRecord(name, delta, value), name, pending.delta, pending.request_id
    )
    return value


def _settle(batch: list[_Pending], plan: _Plan, *, revision: int) -> None:
    for pending, outcome in zip(batch, plan.outcomes, strict=True):
        if pending.future.done():
            continue
        if isinstance(outcome, CounterServiceError):
            pending.future.set_exception(outcome)
        elif isinstance(outcome, CounterValue):
            pending.future.set_result(outcome)
        else:
            pending.future.set_result(CounterValue(plan.base.name, outcome, revision))


def _written(key: str, value: int, revision: int, old: KeyValue | None) -> KeyValue:
    version = old.version + 1 if old is not None else 1
    created = old.create_revision if old is not None else revision
    return KeyValue(key, str(value).encode(), created, revision, version, 0)


def _log_batch(
    name: str, batch: list[_Pending], plan: _Plan, revision: int, attempts: int
) -> None:
    applied = [value for value in plan.outcomes if isinstance(value, int)]
    logger.info(
        "increments applied name=%s count=%d first=%d last=%d revision=%d "
        "requests=%d attempts=%d",
        name,
        len(applied),
        applied[0] if applied else plan.base.value,
        plan.value,
        revision,
        len(plan.outcomes),
        attempts,
    )
    if not logger.isEnabledFor(logging.DEBUG):
        return
    for pending, outcome in zip(batch, plan.outcomes, strict=True):
        logger.debug(
            "increment in batch name=%s delta=%d outcome=%s revision=%d request_id=%s",
            name,
            pending.delta,
            outcome,
            revision,
            pending.request_id or "-",
        )
