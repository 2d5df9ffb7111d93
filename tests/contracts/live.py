"""Calls to real service processes through the mesh, from synchronous tests.

Hypothesis drives synchronous test functions, so the mesh client runs on an
event loop in a background thread, and each call is sent to that loop and
waited for. Stubs are the generated ones, found by the service's name.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from registry.config import MeshConfig
from registry.mesh import Mesh
from tests.contracts.descriptors import stub_class
from tests.integration.service_process import ServiceProcesses

T = TypeVar("T")

# Status codes that no request may produce: a method that is missing, or an
# error that the service did not map to a status on purpose.
FORBIDDEN_CODES = frozenset(
    {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
)
CALL_TIMEOUT = 10.0


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass
class Outcome:
    """The status and the replies of one call."""

    code: grpc.StatusCode
    details: str = ""
    replies: list[Message] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"{self.code.name}: {self.details!r} (field violations {self.violations})"
        )


def _field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    fields: list[str] = []
    for detail in status.details if status is not None else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [violation.field for violation in bad_request.field_violations]
    return fields


async def _one_request(request: Message) -> AsyncIterator[Message]:
    yield request


async def _call(mesh: Mesh, method: MethodDescriptor, request: Message) -> Outcome:
    # The channel is made on the loop's thread: grpc.aio channels belong to
    # the event loop that is running when they are created.
    channel = mesh.channel(method.containing_service.full_name)
    stub = stub_class(method.containing_service)(channel)
    multicallable = getattr(stub, method.name)
    argument: Any = _one_request(request) if method.client_streaming else request
    try:
        if not method.server_streaming:
            return Outcome(
                grpc.StatusCode.OK,
                replies=[await multicallable(argument, timeout=CALL_TIMEOUT)],
            )
        # A stream may never end, as WatchCounter's does not, so the first
        # reply is enough to show that the method works.
        call = multicallable(argument, timeout=CALL_TIMEOUT)
        replies = []
        async for reply in call:
            replies.append(reply)
            break
        call.cancel()
        return Outcome(grpc.StatusCode.OK, replies=replies)
    except grpc.aio.AioRpcError as error:
        return Outcome(
            error.code(),
            error.details() or "",
            violations=_field_violations(error),
        )


@dataclass
class LiveMesh:
    """Real service processes on a real etcd, and a mesh client to call them."""

    config: MeshConfig
    mesh: Mesh
    processes: ServiceProcesses
    loop: LoopThread

    def call(self, method: MethodDescriptor, request: Message) -> Outcome:
        """Call a method through the mesh's balanced channel of its service."""
        return self.loop.run(
            _call(self.mesh, method, request), timeout=3 * CALL_TIMEOUT
        )

    def dead_processes(self) -> list[str]:
        """Return the log tails of service processes that are no longer running."""
        return [
            f"{process.module} exited with {process.process.returncode}:\n"
            + process.log_tail()
            for process in self.processes.started
            if process.process is not None and process.process.poll() is not None
        ]
