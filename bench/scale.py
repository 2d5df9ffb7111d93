"""Figure 6: discovery and channels over 1,000 registered instances.

- Resolver cold start: from a new Resolver to its first complete list.
- Memory per endpoint, by tracemalloc (Python objects) and by the growth of
  this process's resident set (which also counts gRPC's C-core channels).
  A MeshChannel opens an endpoint's grpc channel on its first call, so the
  cost of an open channel is measured on its own.
- The etcd traffic of one process's lease keepalive, counted in both
  directions by a loopback TCP proxy in front of etcd.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from pathlib import Path

from bench.byte_proxy import CountingProxy
from bench.cluster import COUNTER_SERVICE, Cluster, open_cluster
from bench.results import Figure, Target
from bench.settings import Size
from registry.balancer import EndpointState
from registry.channel import MeshChannel
from registry.config import MeshConfig
from registry.discovery import Resolver
from registry.etcd import EtcdClient, op_put
from registry.model import InstanceInfo, encode_record
from registry.registration import Registration

# etcd 3.5 rejects transactions with more than 128 operations by default.
PUTS_PER_TXN = 100
READY_TIMEOUT = 10.0
KEEPALIVE_TTL = 3
DEFAULT_TTL = 10


def resident_bytes() -> int:
    """Return this process's resident set size from /proc/self/statm."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


async def register_instances(cluster: Cluster, count: int) -> None:
    """Write `count` instance keys of the counter service under one lease."""
    lease, _ = await cluster.etcd.grant_lease(300)
    prefix = cluster.config.service_prefix(COUNTER_SERVICE)
    puts = []
    for index in range(count):
        instance_id = f"scale-{index:05d}"
        address = f"127.0.0.1:{20000 + index}"
        puts.append(
            op_put(
                prefix + instance_id,
                encode_record(address, InstanceInfo(instance_id)),
                lease=lease,
            )
        )
    for start in range(0, len(puts), PUTS_PER_TXN):
        await cluster.etcd.txn([], puts[start : start + PUTS_PER_TXN])


async def _cold_start(cluster: Cluster) -> tuple[Resolver, float]:
    started = time.perf_counter()
    resolver = Resolver(cluster.etcd, cluster.config, COUNTER_SERVICE)
    resolver.start()
    await resolver.wait_ready(READY_TIMEOUT)
    return resolver, time.perf_counter() - started


async def measure_scale(size: Size) -> Figure:
    figure = Figure(
        "scale",
        f"Scale: {size.instances:,} registered instances",
        f"{size.instances:,} instance keys of one service under one lease; "
        f"{size.runs} cold starts of a new Resolver in one client process; "
        f"a MeshChannel over all of them; one Registration's keepalive for "
        f"{size.keepalive_seconds:g} s through a byte-counting proxy.",
    )
    async with open_cluster() as cluster:
        await register_instances(cluster, size.instances)
        for _ in range(size.runs):
            resolver, seconds = await _cold_start(cluster)
            figure.add("resolver cold start (list + ready)", "ms", seconds * 1000.0)
            await resolver.close()
        await _measure_memory(cluster, figure, size.instances)
        await _measure_keepalive(cluster.config, figure, size.keepalive_seconds)
    figure.targets.append(
        Target("resolver cold start (list + ready)", 500.0, at_most=True)
    )
    return figure


async def _measure_memory(cluster: Cluster, figure: Figure, instances: int) -> None:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    resolver, _ = await _cold_start(cluster)
    with_resolver = tracemalloc.get_traced_memory()[0]
    rss_before = resident_bytes()
    started = time.perf_counter()
    channel = MeshChannel(resolver)
    built = time.perf_counter() - started
    channel_python = tracemalloc.get_traced_memory()[0] - with_resolver
    rss_growth = resident_bytes() - rss_before
    tracemalloc.stop()
    figure.add(
        "resolver memory per endpoint (tracemalloc)",
        "bytes",
        (with_resolver - base) / instances,
    )
    figure.add(
        "MeshChannel memory per endpoint (tracemalloc)",
        "bytes",
        channel_python / instances,
    )
    figure.add(
        "MeshChannel memory per endpoint (RSS growth)", "bytes", rss_growth / instances
    )
    figure.add("MeshChannel construction over every endpoint", "ms", built * 1000.0)
    await channel.close()
    await _measure_open_channels(resolver, figure)
    await resolver.close()


async def _measure_open_channels(resolver: Resolver, figure: Figure) -> None:
    """Measure what each endpoint costs once a call has opened its channel."""
    states = [EndpointState.open(endpoint) for endpoint in resolver.snapshot().values()]
    gc.collect()
    rss_before = resident_bytes()
    for state in states:
        state.open_channel()
    rss_growth = resident_bytes() - rss_before
    figure.add(
        "endpoint with an open grpc channel (RSS growth)",
        "bytes",
        rss_growth / max(len(states), 1),
    )
    await asyncio.gather(*(state.close_channel(None) for state in states))


async def _measure_keepalive(
    config: MeshConfig, figure: Figure, seconds: float
) -> None:
    etcd_endpoint = config.etcd_endpoints[0]
    proxy = CountingProxy(etcd_endpoint.host, etcd_endpoint.port)
    await proxy.start()
    proxied = MeshConfig.from_env(
        {},
        etcd_endpoints=proxy.url,
        namespace=config.namespace,
        lease_ttl=KEEPALIVE_TTL,
        advertise_host="127.0.0.1",
    )
    try:
        async with CountingEtcdClient(proxied) as etcd:
            registration = Registration(
                etcd,
                proxied,
                services=[COUNTER_SERVICE],
                address="127.0.0.1:1",
                info=InstanceInfo("keepalive-probe"),
            )
            await registration.start()
            await registration.wait_registered(READY_TIMEOUT)
            proxy.reset()
            etcd.refreshes = 0
            await asyncio.sleep(seconds)
            sent, received = proxy.sent, proxy.received
            refreshes = etcd.refreshes
            await registration.stop()
    finally:
        await proxy.stop()
    per_refresh = (sent + received) / max(refreshes, 1)
    refreshes_per_minute = 60.0 / (DEFAULT_TTL / 3)
    figure.add("keepalive bytes per refresh (both directions)", "bytes", per_refresh)
    figure.add(
        f"keepalive bytes per minute at lease TTL {DEFAULT_TTL} s",
        "bytes/min",
        per_refresh * refreshes_per_minute,
    )
    figure.add(
        f"keepalive bytes per minute, measured at TTL {KEEPALIVE_TTL} s",
        "bytes/min",
        (sent + received) * 60.0 / seconds,
    )


class CountingEtcdClient(EtcdClient):
    """An EtcdClient that counts lease refreshes."""

    refreshes = 0

    async def refresh_lease(self, lease_id: int, *, timeout: float) -> int:
        self.refreshes += 1
        return await super().refresh_lease(lease_id, timeout=timeout)
