"""Helpers shared by the fault scenarios: replicas, waits, counts and metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc.aio
from prometheus_client import REGISTRY

from protos import counter_pb2, counter_pb2_grpc
from registry.config import MeshConfig
from registry.discovery import Resolver
from registry.errors import MeshError
from registry.etcd import EtcdClient
from registry.model import Endpoint
from tests.integration.service_process import ServiceProcess, ServiceProcesses

SERVICE = "mesh.counter.v1.CounterService"
COUNTER_MODULE = "counter_svc"
FAKE_MODULE = "tests.integration.fake_service"

Snapshot = Mapping[str, Endpoint]


async def start_replicas(
    processes: ServiceProcesses,
    etcd: EtcdClient,
    module: str,
    count: int,
    extra_env: dict[str, str] | None = None,
) -> list[ServiceProcess]:
    """Start `count` processes at once and wait until each is registered."""
    started = await asyncio.gather(
        *(processes.start(etcd, module, SERVICE, extra_env) for _ in range(count))
    )
    return list(started)


# What registry.registration logs when a lease is gone and it registers again.
REREGISTERED = "registering again"


def reregistrations(replicas: Iterable[ServiceProcess]) -> list[int]:
    """Count, per replica, the re-registrations that its log reports."""
    return [replica.log_text().count(REREGISTERED) for replica in replicas]


def instance_ids(replicas: Iterable[ServiceProcess]) -> set[str]:
    return {replica.instance_id for replica in replicas}


def exactly(expected: set[str]) -> Callable[[Snapshot], bool]:
    return lambda snapshot: set(snapshot) == expected


async def wait_until(
    condition: Callable[[], bool], timeout: float, interval: float = 0.02
) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(interval)


async def registered_ids(etcd: EtcdClient, config: MeshConfig) -> set[str]:
    """Return the instance ids registered for SERVICE, read from etcd itself."""
    prefix = config.service_prefix(SERVICE)
    kvs, _ = await etcd.get_prefix(prefix)
    return {kv.key[len(prefix) :] for kv in kvs}


async def registered_leases(etcd: EtcdClient, config: MeshConfig) -> dict[str, int]:
    """Return the lease of each registration of SERVICE, read from etcd itself."""
    prefix = config.service_prefix(SERVICE)
    kvs, _ = await etcd.get_prefix(prefix)
    return {kv.key[len(prefix) :]: kv.lease for kv in kvs}


def resolver_leases(resolver: Resolver) -> dict[str, int]:
    return {
        instance_id: endpoint.lease
        for instance_id, endpoint in resolver.snapshot().items()
    }


async def wait_converged(
    resolver: Resolver, etcd: EtcdClient, config: MeshConfig, timeout: float
) -> None:
    """Wait until the resolver's endpoints match etcd's registrations and leases."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                if resolver_leases(resolver) == await registered_leases(etcd, config):
                    return
            except MeshError:
                pass
            await asyncio.sleep(0.1)


async def wait_registered(
    etcd: EtcdClient, config: MeshConfig, expected: set[str], timeout: float
) -> None:
    """Wait until etcd contains exactly the expected registrations."""
    async with asyncio.timeout(timeout):
        while await _registered_or_none(etcd, config) != expected:
            await asyncio.sleep(0.1)


async def _registered_or_none(etcd: EtcdClient, config: MeshConfig) -> set[str] | None:
    try:
        return await registered_ids(etcd, config)
    except MeshError:
        return None


async def counter_total(stub: Any, names: Iterable[str]) -> int:
    """Sum the values of several counters, read through `stub`."""
    total = 0
    for name in names:
        reply = await stub.GetCounter(counter_pb2.GetCounterRequest(name=name))
        total += int(reply.counter.value)
    return total


async def fake_total(replicas: Iterable[ServiceProcess], names: Iterable[str]) -> int:
    """Sum counters over in-memory replicas, dialling each replica directly.

    The in-memory service does not deduplicate request ids, so the sum
    counts every Increment that reached a server, retries included.
    """
    total = 0
    for replica in replicas:
        async with grpc.aio.insecure_channel(replica.address) as channel:
            stub = counter_pb2_grpc.CounterServiceStub(channel)
            total += await counter_total(stub, names)
    return total


def write_errors(acked: int, failed: int, final: int) -> tuple[int, int]:
    """Return (lost, doubled) increments given what callers saw and the final value.

    A failed call may or may not have been applied, so only a final value
    below the acknowledged calls is a certain loss, and only one above
    acknowledged plus failed calls is a certain double write.
    """
    return max(0, acked - final), max(0, final - acked - failed)


def metric(name: str, service: str = SERVICE) -> float:
    value = REGISTRY.get_sample_value(name, {"service": service})
    return value or 0.0


class MetricDeltas:
    """Prometheus counters of one service, read as changes since creation."""

    NAMES = (
        "mesh_registrations_total",
        "mesh_lease_losses_total",
        "mesh_watch_restarts_total",
        "mesh_relists_total",
        "mesh_skipped_values_total",
        "mesh_retries_total",
        "mesh_retry_budget_refusals_total",
        "mesh_ejections_total",
    )

    def __init__(self, service: str = SERVICE) -> None:
        self.service = service
        self._start = {name: metric(name, service) for name in self.NAMES}

    def delta(self, name: str) -> float:
        return metric(name, self.service) - self._start[name]

    def deltas(self) -> dict[str, int]:
        """Return the counters that changed, named without "mesh_" and "_total"."""
        changed = {name: int(self.delta(name)) for name in self.NAMES}
        return {
            name.removeprefix("mesh_").removesuffix("_total"): value
            for name, value in changed.items()
            if value
        }


def watching(resolver: Resolver) -> bool:
    """True once the resolver received a watch response since its last failure.

    NOTE: this reads the resolver's private backoff, which it resets on every
    watch response, because Resolver has no public "watching" state.
    """
    return resolver._backoff.attempts == 0


class Stopwatch:
    """Seconds since a fault, for recovery times that are reported only."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def seconds(self) -> float:
        return round(time.monotonic() - self._start, 2)
