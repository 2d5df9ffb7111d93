"""Descriptors that the ingress requests from backends through server reflection.

The ingress loads no message class of the services it forwards. It requests
the descriptors of a service from a live replica with the v1alpha reflection
protocol, which every MeshServer serves, and keeps two things from the
responses: which service returned which `.proto` file, and the shape of each
method (whether requests and responses are streamed).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from registry.channel import MeshChannel
from registry.errors import MeshError

logger = logging.getLogger(__name__)

REFLECTION_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
# Seconds that one reflection request to a backend may take.
REFLECTION_TIMEOUT = 5.0
# Method shapes older than this many seconds are fetched again in the background.
SHAPES_TTL = 60.0
# After a failed fetch, the next one waits this many seconds.
FAILED_FETCH_TTL = 5.0
# The first call of a service waits at most this long for its method shapes,
# then is forwarded as a bidirectional stream, which suits every shape.
SHAPES_WAIT = 1.0

_NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]

ChannelFor = Callable[[str], Awaitable[MeshChannel]]


class Shape(enum.Enum):
    """Whether a method streams its requests and its responses."""

    UNARY_UNARY = "unary_unary"
    UNARY_STREAM = "unary_stream"
    STREAM_UNARY = "stream_unary"
    STREAM_STREAM = "stream_stream"


def shape_of(method: descriptor_pb2.MethodDescriptorProto) -> Shape:
    if method.client_streaming:
        return Shape.STREAM_STREAM if method.server_streaming else Shape.STREAM_UNARY
    return Shape.UNARY_STREAM if method.server_streaming else Shape.UNARY_UNARY


def method_shapes(files: Iterable[bytes], service: str) -> dict[str, Shape]:
    """Return method name -> shape for one service from serialized files."""
    for raw in files:
        file = descriptor_pb2.FileDescriptorProto.FromString(raw)
        for candidate in file.service:
            full_name = f"{file.package}.{candidate.name}".lstrip(".")
            if full_name == service:
                return {method.name: shape_of(method) for method in candidate.method}
    return {}


def file_names(response: reflection_pb2.ServerReflectionResponse) -> list[str]:
    files = response.file_descriptor_response.file_descriptor_proto
    return [descriptor_pb2.FileDescriptorProto.FromString(raw).name for raw in files]


def is_not_found(response: reflection_pb2.ServerReflectionResponse) -> bool:
    if not response.HasField("error_response"):
        return False
    return bool(response.error_response.error_code == _NOT_FOUND)


class BackendReflection:
    """Sends reflection requests to live replicas of mesh services."""

    def __init__(
        self, channel_for: ChannelFor, *, timeout: float = REFLECTION_TIMEOUT
    ) -> None:
        self._channel_for = channel_for
        self._timeout = timeout
        # File name -> the service whose replica returned that file.
        self._file_owners: dict[str, str] = {}

    def owner_of(self, filename: str) -> str | None:
        return self._file_owners.get(filename)

    async def ask(
        self, service: str, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse:
        """Send one request to a replica of service and return its response.

        Raises grpc.aio.AioRpcError when the call fails and MeshError when
        the service cannot be looked up.
        """
        channel = await self._channel_for(service)
        call = channel.unary_stream(
            REFLECTION_METHOD,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(request, timeout=self._timeout)
        # One request and a half-close, so the backend sends one response and ends.
        responses = [response async for response in call]
        if not responses:
            msg = f"{service}: reflection returned no response"
            raise MeshError(msg)
        response: reflection_pb2.ServerReflectionResponse = responses[0]
        for name in file_names(response):
            self._file_owners[name] = service
        return response

    async def first_found(
        self, services: Sequence[str], request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse | None:
        """Ask each service in turn and return the first response but NOT_FOUND."""
        for service in services:
            try:
                response = await self.ask(service, request)
            except (grpc.aio.AioRpcError, MeshError) as exc:
                logger.debug("reflection via %s failed: %s", service, exc)
                continue
            if not is_not_found(response):
                return response
        return None


class MethodCatalog:
    """The shape of each method, fetched once per service and cached."""

    def __init__(
        self,
        reflection: BackendReflection,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reflection = reflection
        self._clock = clock
        # Service -> (time fetched, method shapes, whether the fetch worked).
        self._entries: dict[str, tuple[float, dict[str, Shape], bool]] = {}
        self._fetches: dict[str, asyncio.Task[None]] = {}

    async def shape(
        self, service: str, method: str, *, wait: float = SHAPES_WAIT
    ) -> Shape | None:
        """Return the shape of `method` of `service`, or None when unknown.

        The first call of a service waits up to `wait` seconds for the fetch.
        Later calls use the cached shapes and refresh stale ones in the
        background.
        """
        entry = self._entries.get(service)
        if entry is None:
            fetch = self._start_fetch(service)
            try:
                await asyncio.wait_for(asyncio.shield(fetch), timeout=max(wait, 0.0))
            except TimeoutError:
                return None
            entry = self._entries.get(service)
            return None if entry is None else entry[1].get(method)
        fetched_at, shapes, worked = entry
        ttl = SHAPES_TTL if worked else FAILED_FETCH_TTL
        if self._clock() - fetched_at > ttl:
            self._start_fetch(service)
        return shapes.get(method)

    def _start_fetch(self, service: str) -> asyncio.Task[None]:
        fetch = self._fetches.get(service)
        if fetch is None:
            fetch = asyncio.create_task(self._fetch(service), name=f"shapes-{service}")
            self._fetches[service] = fetch
            fetch.add_done_callback(lambda _task: self._fetches.pop(service, None))
        return fetch

    async def _fetch(self, service: str) -> None:
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
        try:
            response = await self._reflection.ask(service, request)
        except (grpc.aio.AioRpcError, MeshError) as exc:
            previous = self._entries.get(service)
            # Logged once per run of failures, not on every retry.
            level = logging.DEBUG if previous and not previous[2] else logging.INFO
            logger.log(
                level,
                "fetching method shapes of %s failed: %s; its calls are "
                "forwarded as bidirectional streams, retrying in %.0f s",
                service,
                exc,
                FAILED_FETCH_TTL,
            )
            self._entries[service] = (self._clock(), {}, False)
            return
        files = response.file_descriptor_response.file_descriptor_proto
        shapes = method_shapes(files, service)
        self._entries[service] = (self._clock(), shapes, bool(shapes))
        logger.debug("%s: %d method shapes", service, len(shapes))
