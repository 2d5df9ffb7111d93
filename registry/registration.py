"""Register one process in etcd under a lease and keep it registered.

One lease per process carries every key the process registers:

    <namespace>/services/<full proto service name>/<instance id>

A background task refreshes the lease at a third of its TTL, each refresh
with its own timeout. When etcd reports the lease gone (expired, revoked, or
etcd restarted with an empty data directory), the task grants a new lease and
writes the keys again, retrying with capped, jittered backoff for as long as
the process runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from registry import metrics
from registry.backoff import Backoff
from registry.config import MeshConfig
from registry.errors import MeshError
from registry.etcd import EtcdClient, op_delete, op_put
from registry.model import InstanceInfo, encode_record

logger = logging.getLogger(__name__)


@dataclass
class RegistrationStats:
    """Counters of one registration's life, for logs, metrics and tests."""

    registrations: int = 0
    lease_losses: int = 0
    refresh_failures: int = 0
    register_failures: int = 0


class Registration:
    """The keys of one process, kept alive by a lease while the process runs."""

    def __init__(
        self,
        etcd: EtcdClient,
        config: MeshConfig,
        *,
        services: Sequence[str],
        address: str,
        info: InstanceInfo,
    ) -> None:
        if not services:
            raise ValueError("services: register at least one service name")
        self._etcd = etcd
        self._config = config
        self.services = tuple(services)
        self.address = address
        self.info = info
        self.lease_id = 0
        self.stats = RegistrationStats()
        self._registered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(
            self._config.service_prefix(service) + self.info.instance_id
            for service in self.services
        )

    @property
    def registered(self) -> bool:
        return self._registered.is_set()

    async def start(self) -> None:
        """Start the background task, which registers as soon as etcd responds."""
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name=f"registration-{self.info.instance_id}"
            )

    async def wait_registered(self, timeout: float) -> None:
        """Wait until the keys are in etcd; raise TimeoutError after timeout."""
        async with asyncio.timeout(timeout):
            await self._registered.wait()

    async def stop(self) -> None:
        """Stop refreshing, delete the keys and revoke the lease.

        Deleting the keys first makes watchers see the removal at once, even
        if the revoke is lost. A lost revoke only leaves an empty lease, which
        expires after its TTL.
        """
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._registered.clear()
        try:
            await self._etcd.txn([], [op_delete(key) for key in self.keys])
            if self.lease_id:
                await self._etcd.revoke_lease(self.lease_id)
        except MeshError as exc:
            logger.warning(
                "deregistration of %s failed; its keys expire with lease %x "
                "within %d s: %s",
                self.info.instance_id,
                self.lease_id,
                self._config.lease_ttl,
                exc,
            )
        else:
            logger.info("deregistered %s from %s", self.info.instance_id, self.services)
        self.lease_id = 0

    async def _run(self) -> None:
        backoff = Backoff(initial=0.2, maximum=min(5.0, self._config.lease_ttl / 2))
        while True:
            try:
                granted_ttl = await self._register()
            except MeshError as exc:
                self.stats.register_failures += 1
                delay = backoff.next_delay()
                logger.warning(
                    "registration of %s failed; retrying in %.1f s: %s",
                    self.info.instance_id,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            await self._keep_alive(granted_ttl)
            self._registered.clear()
            self.stats.lease_losses += 1
            for service in self.services:
                metrics.LEASE_LOSSES.labels(service).inc()
            logger.warning(
                "lease %x of %s is gone; registering again",
                self.lease_id,
                self.info.instance_id,
            )

    async def _register(self) -> int:
        lease_id, granted_ttl = await self._etcd.grant_lease(self._config.lease_ttl)
        value = encode_record(self.address, self.info)
        await self._etcd.txn(
            [], [op_put(key, value, lease=lease_id) for key in self.keys]
        )
        self.lease_id = lease_id
        self.stats.registrations += 1
        for service in self.services:
            metrics.REGISTRATIONS.labels(service).inc()
        self._registered.set()
        logger.info(
            "registered %s at %s for %s with lease %x (ttl %d s)",
            self.info.instance_id,
            self.address,
            ", ".join(self.services),
            lease_id,
            granted_ttl,
        )
        return granted_ttl

    async def _keep_alive(self, granted_ttl: int) -> None:
        """Refresh the lease until etcd reports it gone, then return."""
        interval = max(granted_ttl / 3, 0.5)
        # Each refresh must finish well before the lease could expire, so a
        # stuck request leaves time for another attempt.
        refresh_timeout = max(granted_ttl / 3, 0.5)
        retry = Backoff(initial=0.1, maximum=interval)
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                ttl_left = await self._etcd.refresh_lease(
                    self.lease_id, timeout=refresh_timeout
                )
            except MeshError as exc:
                self.stats.refresh_failures += 1
                delay = retry.next_delay()
                logger.warning(
                    "lease %x refresh failed; retrying in %.1f s: %s",
                    self.lease_id,
                    delay,
                    exc,
                )
                continue
            if ttl_left <= 0:
                return
            retry.reset()
            delay = interval
