"""Links to etcd are cut under steady load, through a loopback proxy the test controls."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from protos import counter_pb2_grpc
from registry.config import MeshConfig
from registry.mesh import Mesh
from tests.faults.harness import (
    COUNTER_MODULE,
    FAKE_MODULE,
    SERVICE,
    MetricDeltas,
    Stopwatch,
    counter_total,
    exactly,
    instance_ids,
    reregistrations,
    start_replicas,
    wait_registered,
    write_errors,
)
from tests.faults.results import ScenarioResult
from tests.integration.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
async def proxy(etcd_server) -> AsyncIterator[TcpProxy]:
    """A cuttable loopback link to the test's etcd."""
    link = TcpProxy("127.0.0.1", etcd_server.client_port)
    await link.start()
    yield link
    await link.stop()


def through(config: MeshConfig, proxy: TcpProxy) -> MeshConfig:
    endpoints = MeshConfig.from_env({}, etcd_endpoints=proxy.url).etcd_endpoints
    return dataclasses.replace(config, etcd_endpoints=endpoints)


async def test_replica_cut_from_etcd_drops_out_and_returns(
    etcd, mesh_config, mesh, proxy, processes, results, steady_load
):
    # `proxy` comes before `processes`, so the replicas stop (and deregister
    # through the proxy) before the proxy closes.
    direct = await start_replicas(processes, etcd, COUNTER_MODULE, 2)
    cut_off = await processes.start(
        etcd, COUNTER_MODULE, SERVICE, {"MESH_ETCD_ENDPOINTS": proxy.url}
    )
    everyone = instance_ids([*direct, cut_off])
    resolver = mesh.resolver(SERVICE)
    await resolver.wait_for(exactly(everyone), timeout=10)
    stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE))
    metrics = MetricDeltas()
    load = steady_load(stub, "fault-cut-replica")
    await load.wait_acks(50)

    proxy.cut()
    cut_clock = Stopwatch()
    await resolver.wait_for(exactly(instance_ids(direct)), timeout=20)
    # Stay cut for one more TTL, so the replica's lease is certainly gone.
    await asyncio.sleep(mesh_config.lease_ttl)
    cut_seconds = cut_clock.seconds()
    served_before_heal = load.report.served[cut_off.instance_id]
    proxy.heal()
    clock = Stopwatch()
    await resolver.wait_for(exactly(everyone), timeout=20)
    recovery = clock.seconds()
    await load.wait_acks(100)
    report = await load.stop()
    final = await counter_total(stub, load.counter_names)

    lost, doubled = write_errors(report.acked, report.failed, final)
    results.record(
        ScenarioResult(
            5,
            "one counter_svc replica cut off from etcd for longer than the TTL",
            report.calls,
            report.failed,
            lost,
            doubled,
            recovery,
            "heal until clients had the replica again",
            {
                "cut_seconds": cut_seconds,
                "longest_stall": round(report.longest_stall, 2),
                **metrics.deltas(),
            },
        )
    )
    assert report.failed == 0, report.errors
    assert final == report.acked
    assert reregistrations([cut_off]) == [1]
    assert report.served[cut_off.instance_id] > served_before_heal


async def test_compaction_while_watcher_cut_ends_with_live_set(
    etcd, mesh_config, processes, proxy, results, steady_load
):
    replicas = await start_replicas(processes, etcd, FAKE_MODULE, 3)
    victim, survivors = replicas[0], replicas[1:]
    async with Mesh(through(mesh_config, proxy)) as watcher:
        resolver = watcher.resolver(SERVICE)
        await resolver.wait_for(exactly(instance_ids(replicas)), timeout=10)
        channel = watcher.channel(SERVICE)
        metrics = MetricDeltas()
        load = steady_load(
            counter_pb2_grpc.CounterServiceStub(channel), "fault-compaction"
        )
        await load.wait_acks(50)

        proxy.cut()
        await asyncio.to_thread(victim.kill)
        await wait_registered(
            etcd,
            mesh_config,
            instance_ids(survivors),
            timeout=mesh_config.lease_ttl * 5,
        )
        for step in range(20):
            await etcd.put("/fault/filler", str(step))
        await etcd.compact(await etcd.revision())
        proxy.heal()
        clock = Stopwatch()
        await resolver.wait_for(exactly(instance_ids(survivors)), timeout=20)
        recovery = clock.seconds()
        await load.wait_acks(50)
        report = await load.stop()
        final_set = set(resolver.snapshot())

    results.record(
        ScenarioResult(
            6,
            "compaction while a watcher is cut off, one replica SIGKILLed in the gap",
            report.calls,
            report.failed,
            None,
            None,
            recovery,
            "heal until the watcher held exactly the live set",
            {
                "compactions_seen": resolver.stats.compactions,
                "lists": resolver.stats.lists,
                "victim_ejections": channel.statistics()[victim.instance_id].ejections,
                "longest_stall": round(report.longest_stall, 2),
                **metrics.deltas(),
            },
        )
    )
    assert report.failed == 0, report.errors
    assert final_set == instance_ids(survivors)
    assert resolver.stats.compactions >= 1
    assert resolver.stats.lists >= 2
