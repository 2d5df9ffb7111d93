"""Counters in etcd: atomic increments, reads and pages.

Keys under `<namespace>/data/counter/`:

    values/<name>          the counter value as a decimal int64
    requests/<request_id>  the result of an applied increment (see idempotency)
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from counter_svc.errors import (
    ContentionError,
    CounterOverflowError,
    RequestIdReusedError,
)
from counter_svc.idempotency import RequestLease, RequestRecord
from registry.errors import EtcdRequestError
from registry.etcd import (
    EtcdClient,
    KeyValue,
    compare_absent,
    compare_mod_revision,
    op_get,
    op_put,
)

logger = logging.getLogger(__name__)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Each failed compare-and-swap means another writer succeeded, so 50
# concurrent increments of one counter need at most 50 attempts each.
MAX_ATTEMPTS = 64
MAX_BACKOFF = 0.05


@dataclass(frozen=True, slots=True)
class CounterValue:
    """A counter value and the etcd revision that wrote it (0: never written)."""

    name: str
    value: int
    revision: int


class CounterStore:
    """Counter storage in etcd under `<namespace>/data/counter/`."""

    def __init__(self, etcd: EtcdClient, namespace: str) -> None:
        self.etcd = etcd
        self._values_prefix = f"{namespace}/data/counter/values/"
        self._requests_prefix = f"{namespace}/data/counter/requests/"
        self.lease = RequestLease(etcd)

    def value_key(self, name: str) -> str:
        return self._values_prefix + name

    def request_key(self, request_id: str) -> str:
        return self._requests_prefix + request_id

    async def get(self, name: str) -> CounterValue:
        """Return the counter. A counter that was never incremented has the value 0."""
        kv = await self.etcd.get(self.value_key(name))
        return counter_value(name, kv)

    async def list_page(
        self, after: str | None, limit: int
    ) -> tuple[list[CounterValue], bool]:
        """Return up to limit counters named after `after`, in name order,
        and whether more counters follow."""
        start_key = self.value_key(after) + "\x00" if after is not None else None
        kvs, _ = await self.etcd.get_prefix(
            self._values_prefix, start_key=start_key, limit=limit + 1
        )
        counters = [
            counter_value(kv.key.removeprefix(self._values_prefix), kv)
            for kv in kvs[:limit]
        ]
        return counters, len(kvs) > limit

    async def increment(
        self, name: str, delta: int, request_id: str = ""
    ) -> CounterValue:
        """Add delta atomically and return the new value.

        With a request_id, the result is stored in the same transaction, and a
        repeated request_id returns that result without adding again. Raises
        RequestIdReusedError when the request_id was used for another counter
        or delta, CounterOverflowError when the sum leaves int64, and
        ContentionError when the compare-and-swap fails MAX_ATTEMPTS times.
        """
        key = self.value_key(name)
        request_key = self.request_key(request_id) if request_id else None
        counter_kv, record_kv = await self._read(key, request_key)
        lease_renewed = False
        for attempt in range(MAX_ATTEMPTS):
            if record_kv is not None:
                return replay(record_kv, name, delta, request_id)
            current = counter_value(name, counter_kv)
            new_value = checked_sum(current, delta)
            lease = await self.lease.current() if request_key else 0
            try:
                succeeded, counter_kv, record_kv, revision = await self._swap(
                    current, new_value, request_key, lease, delta
                )
            except EtcdRequestError:
                # etcd rejects a put whose lease has expired or was revoked.
                if lease == 0 or lease_renewed:
                    raise
                self.lease.discard(lease)
                lease_renewed = True
                continue
            if succeeded:
                applied = CounterValue(name, new_value, revision)
                _log_increment(applied, delta, request_id, attempt + 1)
                return applied
            # The failure branch read the counter before the pause, so after
            # the pause that value is likely stale: read again before swapping.
            await asyncio.sleep(backoff_delay(attempt))
            counter_kv, record_kv = await self._read(key, request_key)
        raise ContentionError(
            "name",
            f"counter {name!r} was changed by concurrent increments during all "
            f"{MAX_ATTEMPTS} attempts; retry the call",
        )

    async def _read(
        self, key: str, request_key: str | None
    ) -> tuple[KeyValue | None, KeyValue | None]:
        reads = (
            [op_get(key)] if request_key is None else [op_get(key), op_get(request_key)]
        )
        result = await self.etcd.txn([], reads)
        return first_kv(result.ranges, 0), first_kv(result.ranges, 1)

    async def read_with_revision(self, name: str) -> tuple[CounterValue, int]:
        """Return the counter and the store revision at which it was read."""
        result = await self.etcd.txn([], [op_get(self.value_key(name))])
        return counter_value(name, first_kv(result.ranges, 0)), result.revision

    async def _swap(
        self,
        current: CounterValue,
        new_value: int,
        request_key: str | None,
        lease: int,
        delta: int,
    ) -> tuple[bool, KeyValue | None, KeyValue | None, int]:
        """Write new_value if the counter is still at current.revision.

        On failure, return what the counter and the request record contain now.
        """
        key = self.value_key(current.name)
        compare = [compare_mod_revision(key, current.revision)]
        success = [op_put(key, str(new_value))]
        failure = [op_get(key)]
        if request_key is not None:
            record = RequestRecord(current.name, delta, new_value)
            compare.append(compare_absent(request_key))
            success.append(op_put(request_key, record.encode(), lease=lease))
            failure.append(op_get(request_key))
        result = await self.etcd.txn(compare, success, failure)
        if result.succeeded:
            return True, None, None, result.revision
        return False, first_kv(result.ranges, 0), first_kv(result.ranges, 1), 0


def first_kv(ranges: tuple[tuple[KeyValue, ...], ...], index: int) -> KeyValue | None:
    if index >= len(ranges) or not ranges[index]:
        return None
    return ranges[index][0]


def counter_value(name: str, kv: KeyValue | None) -> CounterValue:
    """Parse a stored counter. A missing key is a counter at 0."""
    if kv is None:
        return CounterValue(name, 0, 0)
    try:
        value = int(kv.value)
    except ValueError as exc:
        msg = f"counter key {kv.key!r} contains {kv.value[:64]!r}, not an integer"
        raise ValueError(msg) from exc
    return CounterValue(name, value, kv.mod_revision)


def checked_sum(current: CounterValue, delta: int) -> int:
    new_value = current.value + delta
    if not INT64_MIN <= new_value <= INT64_MAX:
        raise CounterOverflowError(
            "delta",
            f"adding {delta} to counter {current.name!r} at {current.value} "
            "would leave the int64 range; use a delta that keeps the value "
            f"from {INT64_MIN} to {INT64_MAX}",
        )
    return new_value


def replay(record_kv: KeyValue, name: str, delta: int, request_id: str) -> CounterValue:
    record = RequestRecord.decode(record_kv.value)
    check_same_request(record, name, delta, request_id)
    logger.info(
        "increment replayed name=%s delta=%d value=%d request_id=%s",
        name,
        delta,
        record.value,
        request_id,
    )
    return CounterValue(name, record.value, record_kv.mod_revision)


def check_same_request(
    record: RequestRecord, name: str, delta: int, request_id: str
) -> None:
    """Raise RequestIdReusedError unless record is this increment's result."""
    if (record.name, record.delta) != (name, delta):
        raise RequestIdReusedError(
            "request_id",
            f"{request_id!r} was already used to add {record.delta} to counter "
            f"{record.name!r}; send a new request_id for a different increment",
        )


def _log_increment(
    counter: CounterValue, delta: int, request_id: str, attempts: int
) -> None:
    logger.info(
        "increment applied name=%s delta=%d value=%d revision=%d "
        "request_id=%s attempts=%d",
        counter.name,
        delta,
        counter.value,
        counter.revision,
        request_id or "-",
        attempts,
    )


def backoff_delay(attempt: int) -> float:
    # Jitter spreads out writers that lost the same compare-and-swap. The
    # random module is fine here because the delay protects nothing.
    ceiling = min(MAX_BACKOFF, 0.001 * 2**attempt)
    return random.uniform(0, ceiling)  # noqa: S311
