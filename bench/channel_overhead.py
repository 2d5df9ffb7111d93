"""Figure 2: unary calls through a MeshChannel against a plain grpc.aio channel.

One server process (tests/integration/fake_service.py, an in-memory
CounterService) takes GetCounter calls from this process. The plain channel
gets the same channel options as the mesh's endpoint channels, so the
difference is the mesh layer alone. Runs come in pairs whose order alternates
(plain-mesh, mesh-plain, ...), so that drift in the machine's load hits both
alike, and each pair gives one ratio. The pairs are short and many because
other processes on a shared machine change the load within seconds.
"""

from __future__ import annotations

import grpc.aio

from bench.cluster import COUNTER_SERVICE, FAKE_SERVICE_MODULE, open_cluster
from bench.load import LoadResult, run_closed_loop
from bench.results import Figure, Target, ratio
from bench.settings import Size
from protos import counter_pb2, counter_pb2_grpc
from registry.balancer import CHANNEL_OPTIONS
from registry.mesh import Mesh

CALL_TIMEOUT = 10.0
WARMUP_SECONDS = 0.5


async def drive(
    stub: counter_pb2_grpc.CounterServiceAsyncStub, *, callers: int, seconds: float
) -> LoadResult:
    request = counter_pb2.GetCounterRequest(name="bench")

    def call() -> object:
        return stub.GetCounter(request, timeout=CALL_TIMEOUT)

    return await run_closed_loop(call, callers=callers, seconds=seconds)  # type: ignore[arg-type]


async def measure_channel_overhead(size: Size) -> Figure:
    pairs = size.runs * 2
    seconds = size.seconds / 2
    figure = Figure(
        "channel",
        "Balanced-channel overhead",
        f"{size.callers} concurrent callers in this process send GetCounter to "
        "one fake_service process, through a plain grpc.aio channel and through "
        f"a MeshChannel (round robin over that one endpoint), {pairs} pairs "
        f"of {seconds:g} s runs in alternating order.",
    )
    async with open_cluster() as cluster:
        server = await cluster.start_service(FAKE_SERVICE_MODULE)
        async with (
            grpc.aio.insecure_channel(
                server.address, options=CHANNEL_OPTIONS
            ) as plain_channel,
            Mesh(cluster.config, etcd=cluster.etcd) as mesh,
        ):
            mesh_channel = mesh.channel(COUNTER_SERVICE)
            await mesh_channel.channel_ready()
            stubs = {
                "plain": counter_pb2_grpc.CounterServiceStub(plain_channel),
                "mesh": counter_pb2_grpc.CounterServiceStub(mesh_channel),
            }
            for stub in stubs.values():
                warmup = min(WARMUP_SECONDS, size.seconds)
                await drive(stub, callers=size.callers, seconds=warmup)
            for pair in range(pairs):
                order = list(stubs) if pair % 2 == 0 else list(reversed(stubs))
                results = {
                    label: await drive(
                        stubs[label], callers=size.callers, seconds=seconds
                    )
                    for label in order
                }
                for label, result in results.items():
                    figure.add(f"{label} calls/s", "calls/s", result.per_second)
                    figure.add(f"{label} p50", "ms", result.latency_ms(0.50))
                    figure.add(f"{label} p99", "ms", result.latency_ms(0.99))
                    figure.add(f"{label} errors", "calls", sum(result.errors.values()))
                    figure.add(
                        f"{label} client CPU per call", "us", result.cpu_us_per_call
                    )
                figure.add(
                    "mesh / plain calls/s",
                    "ratio",
                    ratio(results["mesh"].per_second, results["plain"].per_second),
                )
                figure.add(
                    "plain / mesh client CPU per call",
                    "ratio",
                    ratio(
                        results["plain"].cpu_us_per_call,
                        results["mesh"].cpu_us_per_call,
                    ),
                )
    figure.notes.append(
        "Client CPU per call is the CPU time of the bench process (all threads) "
        "divided by the calls completed. Other processes on the machine inflate "
        "it much less than they inflate calls/s, so its ratio (above 1 when the "
        "mesh costs less) is the steadier view of the mesh's overhead."
    )
    figure.targets.append(
        Target(
            "mesh / plain calls/s",
            0.9,
            at_most=False,
            reason_if_missed="Single pairs vary with the load that other processes "
            "put on the machine: see the spread and the load average above.",
        )
    )
    return figure
