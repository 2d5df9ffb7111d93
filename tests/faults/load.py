"""A steady-load client: workers that call Increment in a loop until stopped.

Each call carries a fresh request_id, so the mesh channel may send it again
to another replica and the server still applies it once. Each worker adds to
its own counter (`<name>-<worker>`), so the fault tests measure faults and
not compare-and-swap contention between workers. The load records
what callers saw: acknowledged calls, failed calls by status code, and the
instance that served each acknowledged call (from trailing metadata).
Stopping lets every call in flight finish, because a cancelled Increment
may or may not have been applied, and that would blur the exact count.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc.aio

from protos import counter_pb2
from registry.model import INSTANCE_METADATA_KEY

logger = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What the callers saw, in counts, plus the longest gap between acks."""

    acked: int = 0
    failed: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    served: collections.Counter[str] = field(default_factory=collections.Counter)
    longest_stall: float = 0.0

    @property
    def calls(self) -> int:
        return self.acked + self.failed


class SteadyLoad:
    """Concurrent workers, each sending one Increment at a time."""

    def __init__(
        self,
        stub: Any,
        name: str,
        *,
        workers: int = 6,
        pause: float = 0.01,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.report = LoadReport()
        self._stub = stub
        self._workers = workers
        self._pause = pause
        self._timeout = timeout
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_ack = 0.0

    @property
    def counter_names(self) -> list[str]:
        return [f"{self.name}-{index}" for index in range(self._workers)]

    def start(self) -> None:
        self._last_ack = asyncio.get_running_loop().time()
        self._tasks = [
            asyncio.create_task(self._work(counter), name=f"load-{counter}")
            for counter in self.counter_names
        ]

    async def stop(self) -> LoadReport:
        """Stop sending, wait for the calls in flight, and return the report."""
        if not self._stopping.is_set():
            self._stopping.set()
            await asyncio.gather(*self._tasks)
            self._note_stall(asyncio.get_running_loop().time())
        return self.report

    async def wait_acks(self, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` more calls are acknowledged from now on."""
        target = self.report.acked + count
        async with asyncio.timeout(timeout):
            while self.report.acked < target:
                self._raise_if_crashed()
                await asyncio.sleep(0.01)

    def _raise_if_crashed(self) -> None:
        for task in self._tasks:
            if task.done() and task.exception() is not None:
                raise RuntimeError("a load worker crashed") from task.exception()

    async def _work(self, counter: str) -> None:
        while not self._stopping.is_set():
            request = counter_pb2.IncrementRequest(
                name=counter, delta=1, request_id=uuid.uuid4().hex
            )
            call = self._stub.Increment(request, timeout=self._timeout)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                self._record_failure(exc)
            else:
                trailers = await call.trailing_metadata()
                self._record_ack(dict(trailers or ()).get(INSTANCE_METADATA_KEY, "?"))
            await asyncio.sleep(self._pause)

    def _record_ack(self, instance_id: str) -> None:
        self.report.acked += 1
        self.report.served[instance_id] += 1
        self._note_stall(asyncio.get_running_loop().time())

    def _record_failure(self, error: grpc.aio.AioRpcError) -> None:
        self.report.failed += 1
        reason = f"{error.code().name}: {error.details()}"
        self.report.errors[reason] += 1
        logger.warning("load call failed: %s", reason)

    def _note_stall(self, now: float) -> None:
        self.report.longest_stall = max(self.report.longest_stall, now - self._last_ack)
        self._last_ack = now
