"""Figure 4: HTTP increments through front -> counter_svc (2 replicas) -> etcd.

The load comes from a separate process (`python -m bench.http_load`). After
each run the counter is read back through the front and must equal the
number of 200 responses.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx

from bench.cluster import REPO_ROOT, open_cluster
from bench.results import Figure
from bench.settings import Size

REPLICAS = 2
WARMUP_SECONDS = 0.5


async def _load(
    port: int, name: str, connections: int, seconds: float
) -> dict[str, object]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.http_load",
        "--port",
        str(port),
        "--path",
        f"/api/counters/{name}/increment",
        "--connections",
        str(connections),
        "--seconds",
        str(seconds),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        msg = f"bench.http_load exited with status {process.returncode}"
        raise RuntimeError(msg)
    result: dict[str, object] = json.loads(output)
    return result


async def measure_front(size: Size) -> Figure:
    figure = Figure(
        "front",
        "Front throughput",
        f"POST /api/counters/<name>/increment from a separate load process over "
        f"{size.front_connections} keep-alive connections; front -> "
        f"{REPLICAS} counter_svc replicas -> etcd; {size.runs} runs of "
        f"{size.seconds:g} s, each on a new counter.",
    )
    async with open_cluster() as cluster:
        await cluster.start_services("counter_svc", [{}] * REPLICAS)
        front = await cluster.start_front()
        warmup = min(WARMUP_SECONDS, size.seconds)
        await _load(front.port, "bench-warmup", size.front_connections, warmup)
        async with httpx.AsyncClient(base_url=front.url, timeout=10.0) as client:
            for run in range(size.runs):
                name = f"bench-front-{run}"
                result = await _load(
                    front.port, name, size.front_connections, size.seconds
                )
                ok = int(result["ok"])  # type: ignore[call-overload]
                latencies: dict[str, float] = result["latencies_ms"]  # type: ignore[assignment]
                reply = await client.get(f"/api/counters/{name}")
                value = int(reply.json()["counter"]["value"])
                figure.add("increments/s", "req/s", ok / float(result["elapsed"]))  # type: ignore[arg-type]
                figure.add("p50", "ms", latencies["p50"])
                figure.add("p99", "ms", latencies["p99"])
                figure.add("non-200 responses", "responses", float(result["failed"]))  # type: ignore[arg-type]
                figure.add("counter - 200 responses", "increments", value - ok)
    return figure
