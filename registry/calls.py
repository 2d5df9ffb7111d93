"""Call objects returned by MeshChannel.

A stub call on a mesh channel must return at once, but the endpoint can only
be chosen inside the event loop, after discovery is ready. So each call here
defers: the first await, read or write picks an endpoint, starts the real
grpc.aio call on that endpoint's channel, and then delegates to it. Callers
see the ordinary grpc.aio call interface, trailing metadata included.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar, cast

import grpc
import grpc.aio

from registry.balancer import EndpointState

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

# Starts the real call: given the chosen endpoint, returns its grpc.aio call.
Starter = Callable[[EndpointState], Any]
Picker = Callable[[float | None], Awaitable[EndpointState]]


class _DeferredCall(Generic[RequestT, ResponseT]):
    """Shared part of the four call shapes."""

    def __init__(self, pick: Picker, start: Starter, timeout: float | None) -> None:
        self._pick = pick
        self._start = start
        self._timeout = timeout
        self._call: Any = None
        self._state: EndpointState | None = None
        self._error: grpc.aio.AioRpcError | None = None
        self._starting: asyncio.Future[Any] | None = None
        self._cancelled = False
        self._callbacks: list[Callable[[Any], None]] = []

    async def _started(self) -> Any:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._begin())
        return await asyncio.shield(self._starting)

    async def _begin(self) -> Any:
        try:
            state = await self._pick(self._timeout)
        except grpc.aio.AioRpcError as exc:
            self._error = exc
            raise
        state.call_started()
        self._state = state
        self._call = self._start(state)
        self._call.add_done_callback(self._finished)
        for callback in self._callbacks:
            self._call.add_done_callback(callback)
        return self._call

    def _finished(self, _call: Any) -> None:
        if self._state is not None:
            self._state.call_done(failed=self._failed_locally)

    _failed_locally = False

    def _record_failure(self) -> None:
        self._failed_locally = True

    async def _await_result(self) -> ResponseT:
        call = await self._started()
        try:
            return await call  # type: ignore[no-any-return]
        except grpc.aio.AioRpcError:
            self._record_failure()
            raise

    async def _iterate(self) -> AsyncIterator[ResponseT]:
        call = await self._started()
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError:
            self._record_failure()
            raise

    # --- grpc.aio.Call interface ---------------------------------------------

    def cancel(self) -> bool:
        self._cancelled = True
        if self._call is not None:
            return bool(self._call.cancel())
        if self._starting is not None:
            self._starting.cancel()
        return True

    def cancelled(self) -> bool:
        return self._cancelled or (self._call is not None and self._call.cancelled())

    def done(self) -> bool:
        if self._error is not None:
            return True
        return self._call is not None and bool(self._call.done())

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._call is not None:
            self._call.add_done_callback(callback)
        else:
            self._callbacks.append(callback)

    def time_remaining(self) -> float | None:
        return self._call.time_remaining() if self._call is not None else self._timeout

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return await (await self._started_or_failed()).initial_metadata()  # type: ignore[no-any-return]

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return await (await self._started_or_failed()).trailing_metadata()  # type: ignore[no-any-return]

    async def code(self) -> grpc.StatusCode:
        return await (await self._started_or_failed()).code()  # type: ignore[no-any-return]

    async def details(self) -> str:
        return await (await self._started_or_failed()).details()  # type: ignore[no-any-return]

    async def wait_for_connection(self) -> None:
        await (await self._started()).wait_for_connection()

    async def _started_or_failed(self) -> Any:
        try:
            return await self._started()
        except grpc.aio.AioRpcError as exc:
            return _FailedCall(exc)

    # --- streaming requests ---------------------------------------------------

    async def write(self, request: RequestT) -> None:
        await (await self._started()).write(request)

    async def done_writing(self) -> None:
        await (await self._started()).done_writing()

    async def read(self) -> Any:
        return await (await self._started()).read()


class _FailedCall:
    """Stands in for a call that never started, to report its error."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self._error = error

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return self._error.initial_metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return cast("grpc.aio.Metadata", self._error.trailing_metadata())

    async def code(self) -> grpc.StatusCode:
        return self._error.code()

    async def details(self) -> str:
        return self._error.details() or ""


class UnaryUnaryCall(
    _DeferredCall[RequestT, ResponseT], grpc.aio.UnaryUnaryCall[RequestT, ResponseT]
):
    def __await__(self) -> Generator[Any, None, ResponseT]:
        return self._await_result().__await__()


class StreamUnaryCall(
    _DeferredCall[RequestT, ResponseT], grpc.aio.StreamUnaryCall[RequestT, ResponseT]
):
    def __await__(self) -> Generator[Any, None, ResponseT]:
        return self._await_result().__await__()


class UnaryStreamCall(
    _DeferredCall[RequestT, ResponseT], grpc.aio.UnaryStreamCall[RequestT, ResponseT]
):
    def __aiter__(self) -> AsyncIterator[ResponseT]:
        return self._iterate()


class StreamStreamCall(
    _DeferredCall[RequestT, ResponseT], grpc.aio.StreamStreamCall[RequestT, ResponseT]
):
    def __aiter__(self) -> AsyncIterator[ResponseT]:
        return self._iterate()
