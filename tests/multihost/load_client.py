"""A load client for the multi-host tests, run in its own namespace.

    ip netns exec <client> python -m tests.multihost.load_client --max-calls 500

Workers call CounterService.Increment through a mesh channel (MESH_* from the
environment) until a line "stop" or the end of stdin arrives, or a bound
(--max-calls, --max-seconds) is reached, so that it always stops by itself.
Every --status-interval seconds it prints a JSON status line; when it stops
it prints a final line and writes the same JSON to --output:

    {"kind": "final", "calls": 612, "acked": 612, "failed": 0, "errors": {},
     "served": {"<instance id>": 204, ...}, "endpoints": {"<instance id>": "<address>"},
     "attempt_failures": {"<instance id>": 0, ...}, "stopped_by": "request"}

"failed" counts calls that failed for the caller; "attempt_failures" counts
attempts that the mesh channel saw fail, including those it retried.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc.aio

from protos import counter_pb2, counter_pb2_grpc
from registry.config import MeshConfig
from registry.mesh import Mesh
from registry.model import INSTANCE_METADATA_KEY

SERVICE = "mesh.counter.v1.CounterService"


@dataclass
class Counts:
    """What the callers saw: calls, failures by reason, and who served each."""

    acked: int = 0
    failed: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    served: collections.Counter[str] = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.acked + self.failed,
            "acked": self.acked,
            "failed": self.failed,
            "errors": dict(self.errors),
            "served": dict(self.served),
        }


class LoadClient:
    def __init__(self, mesh: Mesh, args: argparse.Namespace) -> None:
        self.counts = Counts()
        self.stopped_by = ""
        self._sent = 0
        self._args = args
        self._resolver = mesh.resolver(SERVICE)
        self._channel = mesh.channel(SERVICE)
        self._stub = counter_pb2_grpc.CounterServiceStub(self._channel)
        self._stopping = asyncio.Event()

    def endpoints(self) -> dict[str, str]:
        snapshot = self._resolver.snapshot()
        return {instance: endpoint.address for instance, endpoint in snapshot.items()}

    def report(self, kind: str) -> str:
        """Return one JSON line: the counts, the endpoints, failed attempts."""
        statistics = self._channel.statistics()
        body = {
            "kind": kind,
            **self.counts.as_dict(),
            "endpoints": self.endpoints(),
            "attempt_failures": {
                instance: stats.failures for instance, stats in statistics.items()
            },
        }
        if kind == "final":
            body["stopped_by"] = self.stopped_by
        return json.dumps(body, sort_keys=True)

    def stop(self, reason: str) -> None:
        if not self._stopping.is_set():
            self.stopped_by = reason
            self._stopping.set()

    async def run(self) -> None:
        """Call until stopped, then wait for the calls in flight to end."""
        workers = [
            asyncio.create_task(self._work(f"multihost-{index}"))
            for index in range(self._args.workers)
        ]
        reporter = asyncio.create_task(self._report())
        try:
            async with asyncio.timeout(self._args.max_seconds):
                await self._stopping.wait()
        except TimeoutError:
            self.stop("max-seconds")
        await asyncio.gather(*workers)
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter

    async def _work(self, counter: str) -> None:
        while not self._stopping.is_set():
            if self._sent >= self._args.max_calls:
                self.stop("max-calls")
                return
            self._sent += 1
            request = counter_pb2.IncrementRequest(name=counter, delta=1)
            call = self._stub.Increment(request, timeout=self._args.timeout)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                self.counts.failed += 1
                self.counts.errors[f"{exc.code().name}: {exc.details()}"] += 1
            else:
                self.counts.acked += 1
                trailers = dict(await call.trailing_metadata() or ())
                self.counts.served[str(trailers.get(INSTANCE_METADATA_KEY, "?"))] += 1
            await asyncio.sleep(self._args.pause)

    async def _report(self) -> None:
        while True:
            print(self.report("status"), flush=True)
            await asyncio.sleep(self._args.status_interval)


def watch_stdin(client: LoadClient, loop: asyncio.AbstractEventLoop) -> None:
    """Stop the client on a "stop" line or at the end of stdin.

    A daemon thread reads stdin, so that a client stopped by its bounds
    exits without waiting for a line that may never come.
    """

    def read() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        loop.call_soon_threadsafe(client.stop, "request")

    threading.Thread(target=read, name="stdin", daemon=True).start()


def leftover_tasks() -> list[str]:
    """Return the tasks still pending once the mesh is closed, by coroutine name.

    A closed mesh should leave none. A task that nothing references any more
    is also reported by asyncio when it is garbage-collected, as "Task was
    destroyed but it is pending!", but only if a collection runs in time.
    """
    current = asyncio.current_task()
    return sorted(
        str(getattr(task.get_coro(), "__qualname__", task.get_name()))
        for task in asyncio.all_tasks()
        if task is not current
    )


async def main(args: argparse.Namespace) -> int:
    async with Mesh(MeshConfig.from_env()) as mesh:
        client = LoadClient(mesh, args)
        watch_stdin(client, asyncio.get_running_loop())
        await client.run()
        final = client.report("final")
    # Calls cancelled by close() finish their last callbacks on the next loop turns.
    await asyncio.sleep(0.2)
    final = json.dumps({**json.loads(final), "leftover_tasks": leftover_tasks()})
    print(final, flush=True)
    if args.output:
        args.output.write_text(final + "\n")
    return 0


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="concurrent callers")
    parser.add_argument(
        "--pause", type=float, default=0.01, help="seconds between a worker's calls"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="deadline of each call, seconds"
    )
    parser.add_argument(
        "--max-calls", type=int, default=100_000, help="stop after this many calls"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=150.0, help="stop after this many seconds"
    )
    parser.add_argument(
        "--status-interval",
        type=float,
        default=0.2,
        help="seconds between status lines",
    )
    parser.add_argument(
        "--output", type=Path, help="file that receives the final JSON report"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_arguments())))
