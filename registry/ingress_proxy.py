"""Forward any gRPC call that reaches the ingress to a replica in the mesh.

The method path `/pkg.Service/Method` names the service, and discovery
picks a live replica of it. Requests and responses stay raw bytes: the
handler has identity serializers, so nothing is decoded in the hot path.

Unary methods go through the mesh channel as unary calls and server
streaming methods as server streams, so that the channel's retries of
unsent requests and its ejection apply. Client and bidirectional streams,
and methods whose shape is unknown, are forwarded as bidirectional streams,
which carry every shape on the wire. Requests are pumped in a task while
responses are read, so both directions stream at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

import grpc
import grpc.aio

from registry.channel import MeshChannel
from registry.errors import MeshError
from registry.ingress_descriptors import SHAPES_WAIT, MethodCatalog, Shape
from registry.ingress_directory import ServiceDirectory
from registry.ingress_reflection import LOCAL_SERVICES
from registry.mesh import Mesh

logger = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str | bytes], ...]
Context = grpc.aio.ServicerContext[bytes, bytes]

# Headers that describe one HTTP/2 hop, not the call. gRPC sets them again
# on the outgoing call, and keys that start with ':' or 'grpc-' are reserved.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "content-type",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    }
)


class StreamingCall(Protocol):
    """The methods of a grpc.aio response-streaming call that the relay uses."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def initial_metadata(self) -> grpc.aio.Metadata: ...

    async def trailing_metadata(self) -> grpc.aio.Metadata: ...


class UnknownServiceError(MeshError):
    """No replica of the service has ever registered in the namespace."""

    def __init__(self, service: str, namespace: str) -> None:
        super().__init__(
            f"unknown service {service!r}: nothing is registered under that name "
            f"in namespace {namespace!r}; list the services with "
            "`grpcurl -plaintext <ingress> list`"
        )
        self.service = service


def split_method(path: str) -> tuple[str, str] | None:
    """Split `/pkg.Service/Method` into service and method, or return None."""
    service, slash, method = path.lstrip("/").partition("/")
    if not path.startswith("/") or not slash or not service or not method:
        return None
    if "/" in method:
        return None
    return service, method


def forwarded_metadata(metadata: Iterable[Any]) -> Metadata:
    """Drop pseudo headers, reserved `grpc-` keys and hop-by-hop headers."""
    return tuple(
        (key, value)
        for key, value in metadata
        if not key.startswith((":", "grpc-")) and key not in _HOP_BY_HOP
    )


class Router:
    """One mesh channel per known service, without a default deadline."""

    def __init__(self, mesh: Mesh, directory: ServiceDirectory, *, policy: str) -> None:
        self._mesh = mesh
        self._directory = directory
        self._policy = policy
        self._channels: dict[str, MeshChannel] = {}

    async def channel(self, service: str) -> MeshChannel:
        """Return the channel of a service.

        Raises UnknownServiceError for a name never registered, and
        MeshError when etcd cannot be asked.
        """
        channel = self._channels.get(service)
        if channel is not None:
            return channel
        if not await self._directory.is_known(service):
            raise UnknownServiceError(service, self._directory.namespace)
        channel = self._channels.get(service)
        if channel is None:
            # Mesh.channel() gives calls without a deadline a default one, but
            # the ingress must keep a stream such as WatchCounter open for as
            # long as the client does, so its channels have none.
            channel = MeshChannel(
                self._mesh.resolver(service),
                policy=self._policy,
                default_timeout=None,
                channel_factory=self._mesh.channel_factory(service),
            )
            self._channels[service] = channel
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


class ProxyHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Forwards every method of every service the ingress does not serve itself."""

    def __init__(self, router: Router, catalog: MethodCatalog) -> None:
        self._router = router
        self._catalog = catalog

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        path = handler_call_details.method
        parts = split_method(path)
        if parts is None or parts[0] in LOCAL_SERVICES:
            return None
        # No serializers: requests and responses pass through as bytes.
        return grpc.stream_stream_rpc_method_handler(
            functools.partial(self.forward, path),
            request_deserializer=None,
            response_serializer=None,
        )

    async def forward(
        self, path: str, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        """Forward one call and copy back responses, metadata and status."""
        parts = split_method(path)
        assert parts is not None, "service() accepts only valid paths"
        service, method = parts
        channel = await _channel_or_abort(self._router, service, context)

        remaining = context.time_remaining()
        wait = SHAPES_WAIT if remaining is None else min(SHAPES_WAIT, remaining / 2)
        shape = await self._catalog.shape(service, method, wait=wait)
        metadata = forwarded_metadata(context.invocation_metadata() or ())

        # The client's deadline becomes the backend call's timeout, and a call
        # without a deadline gets none.
        timeout = context.time_remaining()
        if timeout is not None and timeout <= 0:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"deadline exceeded before {path} was forwarded",
            )

        responses: AsyncIterator[bytes]
        if shape is Shape.UNARY_UNARY:
            request = await _only_request(requests, path, context)
            unary = channel.unary_unary(path)(
                request, metadata=metadata, timeout=timeout
            )
            responses = _relay_unary(unary, context)
        elif shape is Shape.UNARY_STREAM:
            request = await _only_request(requests, path, context)
            stream = channel.unary_stream(path)(
                request, metadata=metadata, timeout=timeout
            )
            responses = _relay(stream, context)
        else:
            call = channel.stream_stream(path)(metadata=metadata, timeout=timeout)
            responses = _relay_streams(call, requests, context)

        async for response in responses:
            yield response


async def _channel_or_abort(
    router: Router, service: str, context: Context
) -> MeshChannel:
    try:
        return await router.channel(service)
    except UnknownServiceError as exc:
        logger.debug("rejected a call to unknown service %r", service)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, str(exc))
    except MeshError as exc:
        # Debug only: HealthReporter logs an etcd outage once, not per call.
        logger.debug("looking up service %r failed: %s", service, exc)
        await context.abort(
            grpc.StatusCode.UNAVAILABLE, f"cannot look up service {service!r}: {exc}"
        )


async def _only_request(
    requests: AsyncIterator[bytes], path: str, context: Context
) -> bytes:
    request = await anext(requests, None)
    if request is None:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{path} takes exactly one request message, and the call sent none",
        )
    return request


async def _pump(
    requests: AsyncIterator[bytes], call: grpc.aio.StreamStreamCall[bytes, bytes]
) -> None:
    """Copy requests to the backend call, then half-close it."""
    try:
        async for request in requests:
            await call.write(request)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        # The backend call has ended, and _relay reports its status.
        return


async def _relay_unary(
    call: grpc.aio.UnaryUnaryCall[bytes, bytes], context: Context
) -> AsyncIterator[bytes]:
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        await _mirror_error(exc, context, headers_sent=False)
    await context.send_initial_metadata(
        forwarded_metadata(await call.initial_metadata())
    )
    context.set_trailing_metadata(forwarded_metadata(await call.trailing_metadata()))
    yield response


async def _relay_streams(
    call: grpc.aio.StreamStreamCall[bytes, bytes],
    requests: AsyncIterator[bytes],
    context: Context,
) -> AsyncIterator[bytes]:
    """Pump requests in a task while relaying responses, so both stream at once."""
    pump = asyncio.create_task(_pump(requests, call))
    try:
        async for response in _relay(call, context):
            yield response
    finally:
        pump.cancel()
        call.cancel()


async def _relay(call: StreamingCall, context: Context) -> AsyncIterator[bytes]:
    """Yield the responses of a streaming call, then copy its trailers.

    The backend's headers go out with the first response. A mesh call picks
    its replica only when it is first read or written, so asking for its
    headers before that would wait forever.
    """
    headers_sent = False
    try:
        async for response in call:
            if not headers_sent:
                await _send_headers(call, context)
                headers_sent = True
            yield response
    except grpc.aio.AioRpcError as exc:
        hint = ""
        if headers_sent and exc.code() == grpc.StatusCode.UNAVAILABLE:
            # NOTE: a stream is not moved to another replica, because the
            # ingress cannot tell which responses a new stream would repeat.
            hint = (
                "; the replica serving this stream stopped or became "
                "unreachable, so call again to reach another replica"
            )
        await _mirror_error(exc, context, headers_sent=headers_sent, hint=hint)
    if not headers_sent:
        await _send_headers(call, context)
    trailers = await call.trailing_metadata()
    context.set_trailing_metadata(forwarded_metadata(trailers))


async def _send_headers(call: StreamingCall, context: Context) -> None:
    headers = await call.initial_metadata()
    await context.send_initial_metadata(forwarded_metadata(headers))


async def _mirror_error(
    exc: grpc.aio.AioRpcError,
    context: Context,
    *,
    headers_sent: bool,
    hint: str = "",
) -> None:
    """End the incoming call with the status and metadata of the backend's."""
    if not headers_sent:
        await context.send_initial_metadata(forwarded_metadata(exc.initial_metadata()))
    logger.debug("forwarded call failed: %s %s", exc.code().name, exc.details())
    await context.abort(
        exc.code(),
        (exc.details() or "") + hint,
        forwarded_metadata(exc.trailing_metadata() or ()),
    )
