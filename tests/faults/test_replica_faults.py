"""Counter replicas die or restart under steady load, and no call or write is lost.

The backends are real counter_svc processes that store counters in etcd and
apply each request_id once, so the final counter must equal the number of
acknowledged increments exactly.
"""

from __future__ import annotations

import asyncio

import pytest

from protos import counter_pb2_grpc
from tests.faults.harness import (
    COUNTER_MODULE,
    SERVICE,
    MetricDeltas,
    Stopwatch,
    counter_total,
    exactly,
    instance_ids,
    start_replicas,
    write_errors,
)
from tests.faults.results import ScenarioResult

pytestmark = [pytest.mark.integration, pytest.mark.faults]


async def test_sigkill_one_of_three_replicas(
    etcd, mesh_config, mesh, processes, results, steady_load
):
    replicas = await start_replicas(processes, etcd, COUNTER_MODULE, 3)
    resolver = mesh.resolver(SERVICE)
    await resolver.wait_for(exactly(instance_ids(replicas)), timeout=10)
    stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE))
    metrics = MetricDeltas()
    load = steady_load(stub, "fault-sigkill")
    await load.wait_acks(50)
    victim, survivors = replicas[0], replicas[1:]

    await asyncio.to_thread(victim.kill)
    clock = Stopwatch()
    await resolver.wait_for(exactly(instance_ids(survivors)), timeout=15)
    recovery = clock.seconds()
    await load.wait_acks(50)
    report = await load.stop()
    final = await counter_total(stub, load.counter_names)

    lost, doubled = write_errors(report.acked, report.failed, final)
    results.record(
        ScenarioResult(
            1,
            "SIGKILL one of 3 counter_svc replicas",
            report.calls,
            report.failed,
            lost,
            doubled,
            recovery,
            "kill until the lease expired and clients dropped the replica",
            {"longest_stall": round(report.longest_stall, 2), **metrics.deltas()},
        )
    )
    assert report.failed == 0, report.errors
    assert final == report.acked
    assert metrics.delta("mesh_ejections_total") > 0
    assert metrics.delta("mesh_retries_total") > 0


async def test_rolling_restart_of_every_replica(
    etcd, mesh_config, mesh, processes, results, steady_load
):
    replicas = await start_replicas(processes, etcd, COUNTER_MODULE, 3)
    resolver = mesh.resolver(SERVICE)
    await resolver.wait_for(exactly(instance_ids(replicas)), timeout=10)
    stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE))
    load = steady_load(stub, "fault-rolling")
    await load.wait_acks(50)
    live = list(replicas)
    exit_codes: list[int] = []
    recoveries: list[float] = []

    for old in replicas:
        clock = Stopwatch()
        exit_codes.append(await asyncio.to_thread(old.stop))
        new = await processes.start(etcd, COUNTER_MODULE, SERVICE)
        live = [*(replica for replica in live if replica is not old), new]
        await resolver.wait_for(exactly(instance_ids(live)), timeout=15)
        recoveries.append(clock.seconds())
        await load.wait_acks(50)
    report = await load.stop()
    final = await counter_total(stub, load.counter_names)

    lost, doubled = write_errors(report.acked, report.failed, final)
    results.record(
        ScenarioResult(
            2,
            "rolling restart of 3 counter_svc replicas",
            report.calls,
            report.failed,
            lost,
            doubled,
            max(recoveries),
            "longest SIGTERM-to-replacement-in-clients, over the 3 restarts",
            {"longest_stall": round(report.longest_stall, 2)},
        )
    )
    assert exit_codes == [0, 0, 0]
    assert report.failed == 0, report.errors
    assert final == report.acked
    for replica in live:
        assert report.served[replica.instance_id] > 0
