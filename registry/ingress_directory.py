"""The ingress's view of which services exist in the mesh, and its health.

A service is known once etcd has shown at least one key under
`<namespace>/services/<name>/`. Known services stay known when their last
replica leaves, so that a call to a service scaled to zero gets UNAVAILABLE
and a call to a name that never registered gets UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from grpc_health.v1 import health_pb2

from registry.errors import MeshError
from registry.mesh import Mesh

logger = logging.getLogger(__name__)

# Full proto service names: dot-separated identifiers. Anything else, such as
# a name with '/', never reaches an etcd key.
_SERVICE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
# Lookups of names not yet known that may query etcd at the same time.
MAX_CONCURRENT_LOOKUPS = 8
# Seconds between two health refreshes.
HEALTH_INTERVAL = 2.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def is_service_name(name: str) -> bool:
    """True for a full proto service name such as `mesh.counter.v1.CounterService`."""
    return _SERVICE_NAME.fullmatch(name) is not None


class ServiceDirectory:
    """Service names registered in etcd, as last listed and ever seen."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.namespace = mesh.config.namespace
        self.listed: tuple[str, ...] = ()
        self.seen: set[str] = set()
        self._lookups = asyncio.Semaphore(MAX_CONCURRENT_LOOKUPS)

    async def refresh(self) -> tuple[str, ...]:
        """List the registered services; raise MeshError when etcd fails."""
        self.listed = tuple(await self.mesh.list_services())
        self.seen.update(self.listed)
        return self.listed

    async def is_known(self, service: str) -> bool:
        """True when the service is or was registered in this namespace.

        A name not seen before costs one small etcd range read, so that a
        service registered a moment ago is found without waiting for the
        next refresh. Raises MeshError when etcd fails.
        """
        if service in self.seen:
            return True
        if not is_service_name(service):
            return False
        prefix = self.mesh.config.service_prefix(service)
        async with self._lookups:
            kvs, _ = await self.mesh.etcd.get_prefix(prefix, limit=1)
        if kvs:
            self.seen.add(service)
        return bool(kvs)


class HealthReporter:
    """Keeps the ingress's health statuses in step with etcd.

    The overall status ("") is SERVING while etcd responds. Each service that
    has a registered replica is SERVING, and one that had replicas and has
    none now is NOT_SERVING.
    """

    def __init__(self, directory: ServiceDirectory, servicer: Any) -> None:
        self._directory = directory
        # grpc_health.v1.health.aio.HealthServicer, which has no type hints.
        self._servicer = servicer
        self._etcd_ok: bool | None = None

    async def run(self, interval: float = HEALTH_INTERVAL) -> None:
        """Refresh the statuses until cancelled."""
        while True:
            await self.update()
            await asyncio.sleep(interval)

    async def update(self) -> None:
        try:
            listed = set(await self._directory.refresh())
        except MeshError as exc:
            if self._etcd_ok is not False:
                logger.warning("etcd failed; reporting NOT_SERVING: %s", exc)
            self._etcd_ok = False
            await self._set("", NOT_SERVING)
            return
        if self._etcd_ok is False:
            logger.info("etcd responds again; reporting SERVING")
        self._etcd_ok = True
        await self._set("", SERVING)
        for service in sorted(self._directory.seen):
            await self._set(service, SERVING if service in listed else NOT_SERVING)

    async def _set(self, service: str, status: int) -> None:
        await self._servicer.set(service, status)
