"""Figure 3: balancing over 3 replicas when one is 10 times slower.

Three fake_service processes reply to Increment after a fixed delay: two
after FAST_DELAY, one after SLOW_DELAY. Each policy has its own MeshChannel,
and the policies take turns within each run. The slow replica's share comes
from the channel's per-endpoint call counters.
"""

from __future__ import annotations

from bench.cluster import COUNTER_SERVICE, FAKE_SERVICE_MODULE, open_cluster
from bench.load import LoadResult, run_closed_loop
from bench.results import Figure, Target, ratio
from bench.settings import Size
from protos import counter_pb2, counter_pb2_grpc
from registry.channel import MeshChannel
from registry.mesh import Mesh

FAST_DELAY = 0.010
SLOW_DELAY = 0.100
POLICIES = ("round_robin", "least_request", "ewma")
CALL_TIMEOUT = 10.0
WARMUP_SECONDS = 0.5
REPLICAS = 3


def _calls_by_instance(channel: MeshChannel) -> dict[str, int]:
    return {instance: stats.calls for instance, stats in channel.statistics().items()}


async def measure_balancing(size: Size) -> Figure:
    figure = Figure(
        "balancing",
        "Balancing with one slow replica",
        f"3 fake_service replicas reply to Increment after {FAST_DELAY * 1000:g} ms, "
        f"{FAST_DELAY * 1000:g} ms and {SLOW_DELAY * 1000:g} ms; "
        f"{size.balancing_callers} concurrent callers per policy, {size.runs} "
        f"runs of {size.seconds:g} s per policy, policies in turn.",
    )
    async with open_cluster() as cluster:
        delays = [FAST_DELAY] * (REPLICAS - 1) + [SLOW_DELAY]
        replicas = await cluster.start_services(
            FAKE_SERVICE_MODULE,
            [{"FAKE_SERVICE_DELAY": str(delay)} for delay in delays],
        )
        slow = replicas[-1]
        async with Mesh(cluster.config, etcd=cluster.etcd) as mesh:
            channels = {
                policy: mesh.channel(COUNTER_SERVICE, policy=policy)
                for policy in POLICIES
            }
            resolver = mesh.resolver(COUNTER_SERVICE)
            await resolver.wait_for(lambda snapshot: len(snapshot) == REPLICAS, 10.0)
            for channel in channels.values():
                warmup = min(WARMUP_SECONDS, size.seconds)
                await _run(channel, size.balancing_callers, warmup)
            for _ in range(size.runs):
                for policy, channel in channels.items():
                    before = _calls_by_instance(channel)
                    result = await _run(channel, size.balancing_callers, size.seconds)
                    after = _calls_by_instance(channel)
                    calls = {key: after[key] - before.get(key, 0) for key in after}
                    share = ratio(calls.get(slow.instance_id, 0), sum(calls.values()))
                    figure.add(f"{policy} slow share", "%", share * 100.0)
                    figure.add(f"{policy} p99", "ms", result.latency_ms(0.99))
                    figure.add(f"{policy} calls/s", "calls/s", result.per_second)
    for policy in POLICIES[1:]:
        figure.targets.append(Target(f"{policy} slow share", 10.0, at_most=True))
    return figure


async def _run(channel: MeshChannel, callers: int, seconds: float) -> LoadResult:
    stub = counter_pb2_grpc.CounterServiceStub(channel)
    request = counter_pb2.IncrementRequest(name="bench", delta=1)

    def call() -> object:
        return stub.Increment(request, timeout=CALL_TIMEOUT)

    return await run_closed_loop(call, callers=callers, seconds=seconds)  # type: ignore[arg-type]
