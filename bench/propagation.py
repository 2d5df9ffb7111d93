"""Figure 1: from a committed registration to 50 watching resolvers.

Each resolver has its own etcd connection, as 50 client processes would, but
all run in this process, so one event loop handles the 50 watch events of
every registration. A separate client writes the registrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping

from bench.cluster import COUNTER_SERVICE, open_cluster
from bench.results import Figure, Target, percentile
from bench.settings import Size
from registry.discovery import Resolver
from registry.etcd import EtcdClient
from registry.model import Endpoint, InstanceInfo, encode_record

ARRIVAL_TIMEOUT = 5.0


class _Arrivals:
    """When each resolver first saw the instance being waited for."""

    def __init__(self, resolvers: int) -> None:
        self.resolvers = resolvers
        self.target = ""
        self.present = True
        self.seen: dict[int, float] = {}
        self.complete = asyncio.Event()

    def expect(self, instance_id: str, *, present: bool) -> None:
        self.target = instance_id
        self.present = present
        self.seen = {}
        self.complete.clear()

    def listener(self, index: int) -> object:
        def record(snapshot: Mapping[str, Endpoint]) -> None:
            if (self.target in snapshot) != self.present or index in self.seen:
                return
            self.seen[index] = time.perf_counter()
            if len(self.seen) == self.resolvers:
                self.complete.set()

        return record


async def measure_propagation(size: Size) -> Figure:
    figure = Figure(
        "propagation",
        "Discovery propagation",
        f"{size.resolvers} resolvers in one process, each on its own etcd "
        f"connection; {size.registrations} registrations per run, each put and "
        "then deleted once every resolver has seen it.",
    )
    async with open_cluster() as cluster, contextlib.AsyncExitStack() as stack:
        arrivals = _Arrivals(size.resolvers)
        for index in range(size.resolvers):
            client = await stack.enter_async_context(EtcdClient(cluster.config))
            resolver = Resolver(client, cluster.config, COUNTER_SERVICE)
            resolver.add_listener(arrivals.listener(index))  # type: ignore[arg-type]
            resolver.start()
            stack.push_async_callback(resolver.close)
            await resolver.wait_ready(ARRIVAL_TIMEOUT)
        lease, _ = await cluster.etcd.grant_lease(60)
        prefix = cluster.config.service_prefix(COUNTER_SERVICE)
        for run in range(size.runs):
            from_sent: list[float] = []
            from_returned: list[float] = []
            for step in range(size.registrations):
                instance_id = f"bench-{run}-{step}"
                key = prefix + instance_id
                value = encode_record(
                    f"127.0.0.1:{20000 + step}", InstanceInfo(instance_id)
                )
                arrivals.expect(instance_id, present=True)
                sent = time.perf_counter()
                await cluster.etcd.put(key, value, lease=lease)
                returned = time.perf_counter()
                await asyncio.wait_for(arrivals.complete.wait(), ARRIVAL_TIMEOUT)
                from_sent.extend(seen - sent for seen in arrivals.seen.values())
                from_returned.extend(seen - returned for seen in arrivals.seen.values())
                arrivals.expect(instance_id, present=False)
                await cluster.etcd.delete(key)
                await asyncio.wait_for(arrivals.complete.wait(), ARRIVAL_TIMEOUT)
            _add_percentiles(figure, "from put returned", from_returned)
            _add_percentiles(figure, "from put sent", from_sent)
    figure.targets.append(Target("p99 from put returned", 20.0, at_most=True))
    figure.notes.append(
        "The resolvers share this process's event loop with the writer, so a "
        "watch event can be handled before the put's own response: values from "
        "put returned can be slightly negative. Values from put sent include "
        "the put's round trip and bound the propagation time from above."
    )
    return figure


def _add_percentiles(figure: Figure, label: str, samples: list[float]) -> None:
    figure.add(f"p50 {label}", "ms", percentile(samples, 0.50) * 1000.0)
    figure.add(f"p99 {label}", "ms", percentile(samples, 0.99) * 1000.0)
