"""Closed-loop callers: each sends one call, waits for it, and sends the next."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc.aio

from bench.results import percentile

CallFactory = Callable[[], Awaitable[object]]


@dataclass
class LoadResult:
    """Completed calls, their latencies in seconds and the failures by code.

    `cpu_seconds` is the CPU time of this whole process (every thread) during
    the run, which other processes on the machine do not inflate.
    """

    elapsed: float
    latencies: list[float] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    cpu_seconds: float = 0.0

    @property
    def cpu_us_per_call(self) -> float:
        calls = len(self.latencies)
        return self.cpu_seconds * 1e6 / calls if calls else 0.0

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def latency_ms(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) * 1000.0


async def run_closed_loop(
    call: CallFactory, *, callers: int, seconds: float
) -> LoadResult:
    """Run `callers` loops of call() for `seconds`, then let calls in flight finish."""
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    cpu_started = time.process_time()
    stop_at = started + seconds

    async def caller() -> None:
        while time.perf_counter() < stop_at:
            begin = time.perf_counter()
            try:
                await call()
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                continue
            latencies.append(time.perf_counter() - begin)

    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    return LoadResult(elapsed, latencies, errors, cpu_seconds)
