"""Server interceptors that every mesh server installs."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from registry.model import INSTANCE_METADATA_KEY


class InstanceTrailerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Name the serving instance in the trailing metadata of every call."""

    def __init__(self, instance_id: str) -> None:
        self._trailer = ((INSTANCE_METADATA_KEY, instance_id),)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        trailer = self._trailer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, trailer),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, trailer),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, trailer),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, trailer),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


Trailer = tuple[tuple[str, str], ...]


def _wrap_unary(behavior: Callable[..., Any], trailer: Trailer) -> Callable[..., Any]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        context.set_trailing_metadata(trailer)
        return await behavior(request, context)

    return wrapped


def _wrap_stream(behavior: Callable[..., Any], trailer: Trailer) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def generator(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            context.set_trailing_metadata(trailer)
            async for response in behavior(request, context):
                yield response

        return generator

    async def writer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        # The servicer sends with context.write() and returns None.
        context.set_trailing_metadata(trailer)
        return await behavior(request, context)

    return writer
