"""Prometheus counters of registration, discovery and balancing, by service label."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from protos import counter_pb2, counter_pb2_grpc
from registry.channel import MeshChannel
from registry.config import MeshConfig
from registry.discovery import Resolver
from registry.etcd import EtcdClient
from registry.etcd_process import free_port
from registry.model import InstanceInfo, encode_record
from registry.registration import Registration
from registry.retry import RetryBudget
from registry.serve import MeshServer
from tests.faults.harness import SERVICE, MetricDeltas, metric, wait_until
from tests.integration.fake_service import MemoryCounter, spec
from tests.integration.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.faults]

OTHER_SERVICE = "mesh.user.v1.UserService"


@pytest.fixture
async def resolver(etcd, mesh_config) -> AsyncIterator[Resolver]:
    watcher = Resolver(etcd, mesh_config, SERVICE)
    watcher.start()
    await watcher.wait_ready(5)
    yield watcher
    await watcher.close()


@pytest.fixture
async def live_server(etcd, mesh_config) -> AsyncIterator[MeshServer]:
    server = MeshServer(
        [spec(MemoryCounter())], mesh_config, etcd=etcd, bind_host="127.0.0.1"
    )
    await server.start()
    yield server
    await server.stop()


async def register_dead(etcd, config: MeshConfig, instance_id: str) -> str:
    """Register an endpoint on a port where nothing listens, and return its key."""
    key = config.service_prefix(SERVICE) + instance_id
    record = encode_record(f"127.0.0.1:{free_port()}", InstanceInfo(instance_id))
    await etcd.put(key, record)
    return key


async def test_reregistration_is_counted(etcd, mesh_config):
    other = metric("mesh_registrations_total", OTHER_SERVICE)
    metrics = MetricDeltas()
    registration = Registration(
        etcd,
        mesh_config,
        services=[SERVICE],
        address="127.0.0.1:1001",
        info=InstanceInfo("metrics-a"),
    )
    await registration.start()
    await registration.wait_registered(5)

    await etcd.revoke_lease(registration.lease_id)
    await wait_until(lambda: registration.stats.registrations == 2, timeout=10)
    await registration.stop()

    assert metrics.delta("mesh_registrations_total") == 2
    assert metrics.delta("mesh_lease_losses_total") == 1
    assert metric("mesh_registrations_total", OTHER_SERVICE) == other


async def test_watch_restart_relist_and_skip_are_counted(
    etcd_server, etcd, mesh_config
):
    proxy = TcpProxy("127.0.0.1", etcd_server.client_port)
    await proxy.start()
    proxied = dataclasses.replace(
        mesh_config,
        etcd_endpoints=MeshConfig.from_env({}, etcd_endpoints=proxy.url).etcd_endpoints,
    )
    metrics = MetricDeltas()
    async with EtcdClient(proxied) as cut_etcd:
        watcher = Resolver(cut_etcd, proxied, SERVICE)
        watcher.start()
        await etcd.put(mesh_config.service_prefix(SERVICE) + "garbage", b"not json")
        await wait_until(lambda: watcher.stats.skipped_values == 1, timeout=5)
        proxy.cut()
        await wait_until(lambda: watcher.stats.watch_restarts >= 1, timeout=10)
        for step in range(5):
            await etcd.put("/fault/filler", str(step))
        await etcd.compact(await etcd.revision())
        proxy.heal()
        await wait_until(lambda: watcher.stats.lists >= 2, timeout=20)
        await watcher.close()
    await proxy.stop()
    stats = watcher.stats
    pauses = stats.watch_restarts + stats.compactions + stats.resets

    assert watcher.stats.skipped_values >= 2
    assert metrics.delta("mesh_skipped_values_total") == watcher.stats.skipped_values
    assert pauses >= 2
    assert metrics.delta("mesh_watch_restarts_total") == pauses
    assert metrics.delta("mesh_relists_total") == watcher.stats.lists


async def test_retry_budget_refusal_and_ejection_are_counted(
    etcd, mesh_config, resolver, live_server
):
    await register_dead(etcd, mesh_config, "a-dead")
    await resolver.wait_for(lambda snapshot: len(snapshot) == 2, timeout=5)
    stingy = MeshChannel(resolver, budget=RetryBudget(ratio=0, floor_per_second=0))
    metrics = MetricDeltas()

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await counter_pb2_grpc.CounterServiceStub(stingy).GetCounter(
            counter_pb2.GetCounterRequest(name="n")
        )
    await stingy.close()

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert metrics.delta("mesh_retry_budget_refusals_total") == 1
    assert metrics.delta("mesh_ejections_total") == 1
    assert metrics.delta("mesh_retries_total") == 0


async def test_retry_around_dead_endpoint_is_counted(
    etcd, mesh_config, resolver, live_server
):
    await register_dead(etcd, mesh_config, "a-dead")
    await resolver.wait_for(lambda snapshot: len(snapshot) == 2, timeout=5)
    channel = MeshChannel(resolver)
    metrics = MetricDeltas()

    reply = await counter_pb2_grpc.CounterServiceStub(channel).GetCounter(
        counter_pb2.GetCounterRequest(name="n")
    )
    await channel.close()

    assert reply.counter.name == "n"
    assert metrics.delta("mesh_retries_total") == 1
    assert metrics.delta("mesh_ejections_total") == 1
    assert metrics.delta("mesh_retry_budget_refusals_total") == 0
