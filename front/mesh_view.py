"""The live view of discovery behind /mesh and /api/mesh.

A snapshot lists every service registered in the namespace, plus the services
the front calls even when they have no instance. For each instance it shows
what discovery stores (address, version, zone, start time) and, for services
the front calls, how many calls the front's channel sent there.

`updates()` yields a new snapshot at once after every discovery event of any
listed service, and at least once per interval so that ages and call counts
move too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass

from front.models import Instance, MeshSnapshot, Service
from registry.channel import MeshChannel
from registry.errors import MeshError
from registry.mesh import Mesh
from registry.model import Endpoint

logger = logging.getLogger(__name__)

# How long a snapshot waits for the first list of a service seen for the
# first time, so that a new service does not show up with no instances.
FIRST_LIST_TIMEOUT = 1.0
UPDATE_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class MeshUnavailable:
    """A snapshot could not be taken, for example because etcd is down."""

    message: str


class MeshView:
    """Snapshots of discovery, with a wake-up for listeners on every change."""

    def __init__(
        self,
        mesh: Mesh,
        channels: Mapping[str, MeshChannel],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._mesh = mesh
        self._channels = channels
        self._clock = clock
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._generation = 0
        self._changed = asyncio.Condition()

    async def snapshot(self) -> MeshSnapshot:
        """Return the current view. Raise MeshError when etcd cannot be read."""
        names = set(await self._mesh.list_services()) | set(self._channels)
        services = [await self._service(name) for name in sorted(names)]
        return MeshSnapshot(namespace=self._mesh.config.namespace, services=services)

    async def updates(
        self, interval: float = UPDATE_INTERVAL
    ) -> AsyncGenerator[MeshSnapshot | MeshUnavailable, None]:
        """Yield a snapshot now, after each discovery event and every interval."""
        while True:
            generation = self._generation
            try:
                yield await self.snapshot()
            except MeshError as exc:
                yield MeshUnavailable(str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval), self._changed:
                    await self._changed.wait_for(
                        lambda: self._generation != generation  # noqa: B023
                    )

    async def close(self) -> None:
        tasks = list(self._watchers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watchers.clear()

    async def _service(self, name: str) -> Service:
        resolver = self._mesh.resolver(name)
        if name not in self._watchers:
            self._watchers[name] = asyncio.create_task(
                self._follow(name), name=f"mesh-view-{name}"
            )
        if not resolver.ready:
            with contextlib.suppress(TimeoutError):
                await resolver.wait_ready(FIRST_LIST_TIMEOUT)
        endpoints = sorted(resolver.snapshot().values(), key=lambda e: e.instance_id)
        return Service(name=name, instances=[self._instance(e) for e in endpoints])

    def _instance(self, endpoint: Endpoint) -> Instance:
        start_time: float | None = endpoint.info.start_time
        age_seconds = None
        if start_time:
            age_seconds = round(max(0.0, self._clock() - start_time), 1)
        else:
            # Registrations written by other clients may lack a start time.
            start_time = None
        instance = Instance(
            instance_id=endpoint.instance_id,
            address=endpoint.address,
            version=endpoint.info.version,
            zone=endpoint.info.zone,
            start_time=start_time,
            age_seconds=age_seconds,
            calls=None,
            failures=None,
            in_flight=None,
        )
        channel = self._channels.get(endpoint.service)
        if channel is None:
            return instance
        # The front calls this service. An instance that its channel has not
        # used yet has no statistics, which means no calls.
        stats = channel.statistics().get(endpoint.instance_id)
        instance.calls = stats.calls if stats else 0
        instance.failures = stats.failures if stats else 0
        instance.in_flight = stats.in_flight if stats else 0
        return instance

    async def _follow(self, name: str) -> None:
        """Wake the listeners of `updates()` on every event of one service."""
        async for event in self._mesh.resolver(name).subscribe():
            logger.debug(
                "%s: instance %s %s", name, event.endpoint.instance_id, event.kind
            )
            self._generation += 1
            async with self._changed:
                self._changed.notify_all()
