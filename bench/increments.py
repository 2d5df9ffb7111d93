"""Figure 5: increments of one hot counter through counter_svc.

Two counter_svc processes run side by side: one with one etcd transaction
per request (MESH_COUNTER_COALESCE=0) and one that merges the queued
increments of a counter into one transaction (MESH_COUNTER_COALESCE=1).
Callers in this process send Increment with a fresh request_id over a plain
grpc.aio channel to one process at a time; the modes alternate. After each
run the counter must equal the number of successful calls, and the values
returned must be exactly 1..n.
"""

from __future__ import annotations

import uuid

import grpc.aio

from bench.cluster import open_cluster
from bench.load import run_closed_loop
from bench.results import Figure, Target, ratio
from bench.settings import Size
from protos import counter_pb2, counter_pb2_grpc

MODES = {"per-request": "0", "coalesced": "1"}
CALL_TIMEOUT = 10.0


async def measure_increments(size: Size) -> Figure:
    figure = Figure(
        "increments",
        "Increments of one counter through counter_svc",
        f"Increment with a fresh request_id on one counter, from 1 and from "
        f"{size.counter_callers} concurrent callers, to one counter_svc process "
        f"per mode; {size.runs} alternating runs of {size.seconds:g} s, each on "
        "a new counter.",
    )
    async with open_cluster() as cluster:
        stubs: dict[str, counter_pb2_grpc.CounterServiceAsyncStub] = {}
        channels: list[grpc.aio.Channel] = []
        processes = await cluster.start_services(
            "counter_svc", [{"MESH_COUNTER_COALESCE": flag} for flag in MODES.values()]
        )
        for mode, process in zip(MODES, processes, strict=True):
            channel = grpc.aio.insecure_channel(process.address)
            channels.append(channel)
            stubs[mode] = counter_pb2_grpc.CounterServiceStub(channel)
        try:
            for run in range(size.runs):
                for callers in (1, size.counter_callers):
                    rates: dict[str, float] = {}
                    for mode, stub in stubs.items():
                        name = f"bench-{mode}-{callers}-{run}"
                        rates[mode] = await _run(
                            figure,
                            stub,
                            name,
                            mode,
                            callers=callers,
                            seconds=size.seconds,
                        )
                    figure.add(
                        f"coalesced / per-request, {callers} callers",
                        "ratio",
                        ratio(rates["coalesced"], rates["per-request"]),
                    )
        finally:
            for channel in channels:
                await channel.close(None)
    figure.targets.append(
        Target(
            f"coalesced / per-request, {size.counter_callers} callers",
            10.0,
            at_most=False,
        )
    )
    return figure


async def _run(
    figure: Figure,
    stub: counter_pb2_grpc.CounterServiceAsyncStub,
    name: str,
    mode: str,
    *,
    callers: int,
    seconds: float,
) -> float:
    values: list[int] = []

    async def call() -> None:
        request = counter_pb2.IncrementRequest(
            name=name, delta=1, request_id=uuid.uuid4().hex
        )
        reply = await stub.Increment(request, timeout=CALL_TIMEOUT)
        values.append(reply.counter.value)

    result = await run_closed_loop(call, callers=callers, seconds=seconds)
    final = await stub.GetCounter(counter_pb2.GetCounterRequest(name=name))
    label = f"{mode}, {callers} callers"
    figure.add(f"{label}: increments/s", "increments/s", result.per_second)
    figure.add(f"{label}: p99", "ms", result.latency_ms(0.99))
    figure.add(f"{label}: failed calls", "calls", sum(result.errors.values()))
    exact = sorted(values) == list(range(1, len(values) + 1))
    figure.add(
        f"{label}: counter - successful calls",
        "increments",
        final.counter.value - len(values),
    )
    figure.add(f"{label}: values exactly 1..n", "1 = yes", 1.0 if exact else 0.0)
    return result.per_second
