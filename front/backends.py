"""The front's gRPC clients: generated stubs on mesh channels, with deadlines.

The front reaches services only through these stubs. Each unary call gets a
deadline and returns the id of the instance that served it, which servers
put in the trailing metadata under INSTANCE_METADATA_KEY.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc.aio

import protos
from registry.channel import MeshChannel
from registry.mesh import Mesh
from registry.model import INSTANCE_METADATA_KEY

COUNTER_SERVICE = "mesh.counter.v1.CounterService"
USER_SERVICE = "mesh.user.v1.UserService"
BACKEND_SERVICES = (COUNTER_SERVICE, USER_SERVICE)
DEFAULT_CALL_TIMEOUT = 5.0

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True, slots=True)
class Served(Generic[ResponseT]):
    """A backend reply and the id of the instance that sent it."""

    response: ResponseT
    instance: str


@dataclass(frozen=True, slots=True)
class CounterUpdate:
    """One value of a counter from WatchCounter."""

    name: str
    value: int
    revision: int


class Backends:
    """Stubs for every service the front calls, sharing the mesh's channels."""

    def __init__(self, mesh: Mesh, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self.timeout = timeout
        self.channels: Mapping[str, MeshChannel] = {
            service: mesh.channel(service) for service in BACKEND_SERVICES
        }
        self.counters = protos.counter_pb2_grpc.CounterServiceStub(
            self.channels[COUNTER_SERVICE]
        )
        self.users = protos.user_pb2_grpc.UserServiceStub(self.channels[USER_SERVICE])

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        request: RequestT,
    ) -> Served[ResponseT]:
        """Make one unary call with the deadline. A failed call raises AioRpcError."""
        call = method(request, timeout=self.timeout)
        response = await call
        metadata = await call.trailing_metadata()
        return Served(response, instance_from_metadata(metadata))

    async def watch_counter(self, name: str) -> AsyncIterator[CounterUpdate]:
        """Yield the counter's current value, then each change.

        NOTE: the stream has no deadline because it is meant to stay open.
        The channel's keepalive pings end it with UNAVAILABLE when the
        serving instance disappears, and the caller opens a new one.
        """
        request = protos.counter_pb2.WatchCounterRequest(name=name)
        call = self.counters.WatchCounter(request)
        try:
            async for reply in call:
                yield CounterUpdate(
                    name=reply.counter.name or name,
                    value=reply.counter.value,
                    revision=reply.revision,
                )
        finally:
            call.cancel()


def instance_from_metadata(metadata: grpc.aio.Metadata | None) -> str:
    """Return the serving instance's id from trailing metadata, or ''."""
    if metadata is None:
        return ""
    for key, value in metadata:
        if key == INSTANCE_METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""
