"""100 resolvers in one process ride out an etcd restart without a thundering herd."""

from __future__ import annotations

import asyncio
import collections
import contextlib

import pytest

from registry.discovery import Resolver
from registry.etcd import EtcdClient
from registry.model import InstanceInfo, encode_record
from tests.faults.harness import SERVICE, Stopwatch, wait_until, watching
from tests.faults.results import ScenarioResult

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RESOLVERS = 100
CLIENTS = 4
DOWN_SECONDS = 3.0
BUCKET_SECONDS = 0.1
# No 100 ms window may hold more than this share of the re-watches.
MAX_BUCKET_SHARE = 0.3


async def first_watch_times(
    resolvers: list[Resolver], clock: Stopwatch, timeout: float
) -> list[float]:
    """Return, per resolver, the seconds until it got a watch response again."""
    times: dict[int, float] = {}
    async with asyncio.timeout(timeout):
        while len(times) < len(resolvers):
            for index, resolver in enumerate(resolvers):
                if index not in times and watching(resolver):
                    times[index] = clock.seconds()
            await asyncio.sleep(0.005)
    return [times[index] for index in range(len(resolvers))]


async def test_hundred_resolvers_rewatch_spread_out(
    etcd_server, etcd, mesh_config, results
):
    await etcd.put(
        mesh_config.service_prefix(SERVICE) + "one",
        encode_record("127.0.0.1:9", InstanceInfo("one")),
    )
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(EtcdClient(mesh_config))
            for _ in range(CLIENTS)
        ]
        resolvers = [
            Resolver(clients[index % CLIENTS], mesh_config, SERVICE)
            for index in range(RESOLVERS)
        ]
        for resolver in resolvers:
            resolver.start()
            stack.push_async_callback(resolver.close)
        for resolver in resolvers:
            await resolver.wait_ready(10)

        delays_before = [len(resolver.last_retry_delays) for resolver in resolvers]
        await asyncio.to_thread(etcd_server.stop)
        await wait_until(lambda: not any(map(watching, resolvers)), timeout=10)
        await asyncio.sleep(DOWN_SECONDS)
        await asyncio.to_thread(etcd_server.start)
        times = await first_watch_times(resolvers, Stopwatch(), timeout=30)
        delays = [
            delay
            for resolver, seen in zip(resolvers, delays_before, strict=True)
            for delay in list(resolver.last_retry_delays)[seen:]
        ]
        snapshots = [set(resolver.snapshot()) for resolver in resolvers]

    buckets = collections.Counter(int(seconds / BUCKET_SECONDS) for seconds in times)
    busiest = max(buckets.values())
    results.record(
        ScenarioResult(
            7,
            f"{RESOLVERS} resolvers on {CLIENTS} etcd clients, etcd restarted",
            None,
            None,
            None,
            None,
            max(times),
            "etcd start until the last resolver watched again",
            {
                "first_rewatch_seconds": min(times),
                "busiest_100ms_bucket": busiest,
                "buckets_used": len(buckets),
                "distinct_retry_delays": len(set(delays)),
            },
        )
    )
    assert len(set(delays)) > 1
    assert busiest <= MAX_BUCKET_SHARE * RESOLVERS, sorted(times)
    assert all(snapshot == {"one"} for snapshot in snapshots)
