"""etcd goes away under steady load; discovery and routing keep working.

The backends are in-memory CounterService replicas (tests.integration.
fake_service) served through the real MeshServer. counter_svc keeps its
counters in etcd, so its Increments cannot succeed while etcd is down. These
scenarios test that registration, discovery and routing survive the outage.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import counter_pb2_grpc
from tests.faults.harness import (
    FAKE_MODULE,
    SERVICE,
    MetricDeltas,
    Stopwatch,
    exactly,
    fake_total,
    instance_ids,
    registered_ids,
    registered_leases,
    reregistrations,
    resolver_leases,
    start_replicas,
    wait_converged,
    wait_registered,
    wait_until,
    watching,
    write_errors,
)
from tests.faults.results import ScenarioResult

pytestmark = [pytest.mark.integration, pytest.mark.faults]

OUTAGE_SECONDS = 30.0


async def check_health_until(stub, seconds: float) -> tuple[int, int]:
    """Send health checks through the mesh for `seconds` and return (calls, failed)."""
    calls = failed = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        calls += 1
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        except grpc.aio.AioRpcError:
            failed += 1
        else:
            failed += reply.status != health_pb2.HealthCheckResponse.SERVING
        await asyncio.sleep(0.5)
    return calls, failed


async def test_etcd_down_30_seconds_keeps_routing(
    etcd_server, etcd, mesh_config, mesh, processes, results, steady_load
):
    replicas = await start_replicas(processes, etcd, FAKE_MODULE, 3)
    expected = instance_ids(replicas)
    resolver = mesh.resolver(SERVICE)
    await resolver.wait_for(exactly(expected), timeout=10)
    sizes: list[int] = []
    resolver.add_listener(lambda snapshot: sizes.append(len(snapshot)))
    channel = mesh.channel(SERVICE)
    load = steady_load(counter_pb2_grpc.CounterServiceStub(channel), "fault-etcd-down")
    await load.wait_acks(50)

    await asyncio.to_thread(etcd_server.stop)
    acked_before = load.report.acked
    health = health_pb2_grpc.HealthStub(channel)
    health_calls, health_failed = await check_health_until(health, OUTAGE_SECONDS)
    acked_during = load.report.acked - acked_before
    endpoints_during = set(resolver.snapshot())
    await asyncio.to_thread(etcd_server.start)
    clock = Stopwatch()
    with contextlib.suppress(TimeoutError):
        await wait_registered(etcd, mesh_config, expected, timeout=20)
        await wait_until(lambda: watching(resolver), timeout=20)
        await wait_converged(resolver, etcd, mesh_config, timeout=20)
    recovery = clock.seconds()
    await load.wait_acks(50)
    report = await load.stop()
    total = await fake_total(replicas, load.counter_names)

    lost, doubled = write_errors(report.acked, report.failed, total)
    results.record(
        ScenarioResult(
            3,
            f"etcd stopped for {OUTAGE_SECONDS:.0f} s, restarted with its data",
            report.calls + health_calls,
            report.failed + health_failed,
            lost,
            doubled,
            recovery,
            "etcd start until every lease was live and clients watched again",
            {
                "increments_during_outage": acked_during,
                "health_checks_during_outage": health_calls,
                "reregistrations": reregistrations(replicas),
                "longest_stall": round(report.longest_stall, 2),
            },
        )
    )
    assert report.failed == 0, report.errors
    assert health_failed == 0
    assert acked_during > 0
    assert endpoints_during == expected
    assert min(sizes, default=3) == 3
    assert await registered_ids(etcd, mesh_config) == expected
    assert watching(resolver)
    assert resolver_leases(resolver) == await registered_leases(etcd, mesh_config)
    assert total == report.acked


async def test_etcd_restart_with_empty_data_registers_everyone_again(
    etcd_server, etcd, mesh_config, mesh, processes, results, tmp_path, steady_load
):
    # Filler writes put the old revision above what the re-registrations
    # write, so the resolver detects that the revision went back.
    for step in range(30):
        await etcd.put("/fault/filler", str(step))
    replicas = await start_replicas(processes, etcd, FAKE_MODULE, 3)
    expected = instance_ids(replicas)
    resolver = mesh.resolver(SERVICE)
    await resolver.wait_for(exactly(expected), timeout=10)
    sizes: list[int] = []
    resolver.add_listener(lambda snapshot: sizes.append(len(snapshot)))
    metrics = MetricDeltas()
    load = steady_load(
        counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE)), "fault-etcd-reset"
    )
    await load.wait_acks(50)

    await asyncio.to_thread(etcd_server.kill)
    etcd_server.data_dir = tmp_path / "etcd-empty"
    await asyncio.to_thread(etcd_server.start)
    clock = Stopwatch()
    with contextlib.suppress(TimeoutError):
        await wait_registered(etcd, mesh_config, expected, timeout=30)
        await wait_until(lambda: resolver.stats.resets >= 1, timeout=30)
        await wait_converged(resolver, etcd, mesh_config, timeout=30)
    recovery = clock.seconds()
    await load.wait_acks(50)
    report = await load.stop()
    total = await fake_total(replicas, load.counter_names)

    lost, doubled = write_errors(report.acked, report.failed, total)
    results.record(
        ScenarioResult(
            4,
            "etcd restarted with an empty data directory",
            report.calls,
            report.failed,
            lost,
            doubled,
            recovery,
            "etcd start until every instance was registered again and "
            "clients held the new registrations",
            {
                "reregistrations": reregistrations(replicas),
                "longest_stall": round(report.longest_stall, 2),
                **metrics.deltas(),
            },
        )
    )
    assert report.failed == 0, report.errors
    assert await registered_ids(etcd, mesh_config) == expected
    assert reregistrations(replicas) == [1, 1, 1]
    assert resolver.stats.resets >= 1
    assert set(resolver.snapshot()) == expected
    assert resolver_leases(resolver) == await registered_leases(etcd, mesh_config)
    assert min(sizes, default=3) == 3
    assert total == report.acked
