"""Stored results of applied increments, so that a retried request is applied once.

A result lives under `<namespace>/data/counter/requests/<request_id>` and is
attached to an etcd lease, so etcd deletes it when the lease expires. The
process shares one lease among all results and starts a new one every hour.
The lease lasts 25 hours, so each result lives at least the 24 hours that
counter.proto promises, and at most 25 hours.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass

from registry.etcd import EtcdClient

logger = logging.getLogger(__name__)

REQUEST_RETENTION = 24 * 3600
LEASE_ROTATION = 3600
LEASE_TTL = REQUEST_RETENTION + LEASE_ROTATION


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """The outcome of one applied increment, stored under its request_id.

    The record is written in the same transaction as the counter, so the
    record key's mod_revision is the revision of the increment.
    """

    name: str
    delta: int
    value: int

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> RequestRecord:
        """Parse a stored record, raising ValueError when it is malformed."""
        try:
            body = json.loads(raw)
            return cls(
                name=str(body["name"]),
                delta=int(body["delta"]),
                value=int(body["value"]),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"malformed request record {raw[:200]!r}: {exc}") from exc


class RequestLease:
    """The shared lease for request records, granted on first use.

    `current()` returns a lease with at least REQUEST_RETENTION seconds left,
    granting a new one when the last is an hour old or was reported lost.
    """

    def __init__(self, etcd: EtcdClient) -> None:
        self._etcd = etcd
        self._lease_id = 0
        self._granted_at = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> int:
        async with self._lock:
            age = time.monotonic() - self._granted_at
            if self._lease_id == 0 or age >= LEASE_ROTATION:
                await self._grant()
            return self._lease_id

    def discard(self, lease_id: int) -> None:
        """Forget a lease that etcd reported as not found, so the next call grants one."""
        if self._lease_id == lease_id:
            logger.warning("request lease lost lease=%x; granting a new one", lease_id)
            self._lease_id = 0

    async def _grant(self) -> None:
        lease_id, ttl = await self._etcd.grant_lease(LEASE_TTL)
        self._lease_id = lease_id
        self._granted_at = time.monotonic()
        logger.info("request lease granted lease=%x ttl=%d", lease_id, ttl)
