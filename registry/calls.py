"""Call objects returned by MeshChannel.

A stub call on a mesh channel must return at once, but the endpoint can only
be chosen inside the event loop, after discovery is ready. So each call here
defers: the first await, read or write picks an endpoint and starts the real
grpc.aio call on that endpoint's channel. Callers see the ordinary grpc.aio
call interface, trailing metadata included.

Unary calls, and response streams that failed before their first message,
are retried on another endpoint when the retry rules allow (registry.retry).
Calls that stream requests are sent once, because their requests cannot be
replayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio
import tenacity

from registry import metrics
from registry.balancer import EndpointState
from registry.retry import MethodRules, RetryBudget, never_sent

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True)
class CallSetup:
    """What a call needs from its channel."""

    service: str
    method: str
    rules: MethodRules
    pick: Callable[[float | None, set[EndpointState]], Awaitable[EndpointState]]
    start: Callable[[EndpointState, float | None], Any]
    on_unavailable: Callable[[EndpointState], None]
    budget: RetryBudget
    max_attempts: int


class NoEndpointError(grpc.aio.AioRpcError):
    """UNAVAILABLE raised before any request was sent: nothing to pick from."""


def _stop_at_deadline(deadline: float | None) -> tenacity.stop.stop_base:
    class _StopAtDeadline(tenacity.stop.stop_base):
        def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
            if deadline is None:
                return False
            now = asyncio.get_running_loop().time()
            return now + retry_state.upcoming_sleep >= deadline

    return _StopAtDeadline()


class _MeshCall(Generic[RequestT, ResponseT]):
    """Shared part of the four call shapes."""

    def __init__(self, setup: CallSetup, timeout: float | None) -> None:
        self._setup = setup
        self._timeout = timeout
        self._deadline = (
            None if timeout is None else asyncio.get_running_loop().time() + timeout
        )
        self._call: Any = None
        self._error: grpc.aio.AioRpcError | None = None
        self._started = asyncio.Event()
        self._cancelled = False
        self._callbacks: list[Callable[[Any], None]] = []
        self._got_response = False
        # A writer task and a reader task may both start a streaming call.
        self._start_lock = asyncio.Lock()

    # --- attempts --------------------------------------------------------------

    def _retrying(self) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._setup.max_attempts)
            | _stop_at_deadline(self._deadline),
            wait=tenacity.wait_random_exponential(multiplier=0.02, max=0.5),
            retry=tenacity.retry_if_exception(self._retryable),
            reraise=True,
            before_sleep=self._count_retry,
        )

    def _retryable(self, error: BaseException) -> bool:
        if not isinstance(error, grpc.aio.AioRpcError) or isinstance(
            error, NoEndpointError
        ):
            return False
        if error.code() != grpc.StatusCode.UNAVAILABLE or self._got_response:
            return False
        if not (self._setup.rules.idempotent or never_sent(error)):
            return False
        if not self._setup.budget.try_spend():
            metrics.BUDGET_REFUSALS.labels(self._setup.service).inc()
            return False
        return True

    def _count_retry(self, _state: tenacity.RetryCallState) -> None:
        metrics.RETRIES.labels(self._setup.service).inc()

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return self._deadline - asyncio.get_running_loop().time()

    async def _begin(self, tried: set[EndpointState]) -> tuple[EndpointState, Any]:
        """Pick an endpoint not tried yet, if any, and start the real call."""
        try:
            state = await self._setup.pick(self._remaining(), tried)
        except grpc.aio.AioRpcError as exc:
            self._error = exc
            self._started.set()
            raise
        tried.add(state)
        call = self._setup.start(state, self._remaining())
        for callback in self._callbacks:
            call.add_done_callback(callback)
        self._call = call
        self._error = None
        state.call_started()
        self._started.set()
        return state, call

    def _failed(self, state: EndpointState, error: grpc.aio.AioRpcError) -> None:
        self._error = error
        if error.code() == grpc.StatusCode.UNAVAILABLE:
            self._setup.on_unavailable(state)

    async def _unary_result(self) -> ResponseT:
        self._setup.budget.record_call()
        tried: set[EndpointState] = set()
        async for attempt in self._retrying():
            with attempt:
                state, call = await self._begin(tried)
                loop = asyncio.get_running_loop()
                began = loop.time()
                latency: float | None = None
                try:
                    response: ResponseT = await call
                    latency = loop.time() - began
                except grpc.aio.AioRpcError as exc:
                    self._failed(state, exc)
                    raise
                finally:
                    state.call_done(failed=latency is None, latency=latency)
                return response
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _responses(self) -> AsyncIterator[ResponseT]:
        self._setup.budget.record_call()
        tried: set[EndpointState] = set()
        async for attempt in self._retrying():
            with attempt:
                state, call = await self._begin(tried)
                failed = True
                try:
                    async for response in call:
                        self._got_response = True
                        yield response
                    failed = False
                except grpc.aio.AioRpcError as exc:
                    self._failed(state, exc)
                    raise
                finally:
                    state.call_done(failed=failed)
                    # A consumer that stops reading early ends the stream.
                    call.cancel()
                return

    async def _single(self) -> Any:
        """Start a call that streams requests: one attempt, no retry."""
        async with self._start_lock:
            if self._call is None and self._error is None:
                state, call = await self._begin(set())
                call.add_done_callback(lambda _call: state.call_done(failed=False))
        if self._call is None:
            raise self._error or RuntimeError("call did not start")
        return self._call

    # --- grpc.aio.Call interface -------------------------------------------------

    def cancel(self) -> bool:
        self._cancelled = True
        if self._call is not None:
            return bool(self._call.cancel())
        return True

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        if self._call is None:
            return self._error is not None
        return bool(self._call.done())

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._call is not None:
            self._call.add_done_callback(callback)
        else:
            self._callbacks.append(callback)

    def time_remaining(self) -> float | None:
        return self._remaining()

    async def _outcome(self) -> Any:
        await self._started.wait()
        if self._call is not None and self._error is None:
            return self._call
        return _FailedCall(self._error) if self._error is not None else self._call

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return await (await self._outcome()).initial_metadata()  # type: ignore[no-any-return]

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return await (await self._outcome()).trailing_metadata()  # type: ignore[no-any-return]

    async def code(self) -> grpc.StatusCode:
        return await (await self._outcome()).code()  # type: ignore[no-any-return]

    async def details(self) -> str:
        return await (await self._outcome()).details()  # type: ignore[no-any-return]

    async def wait_for_connection(self) -> None:
        await self._started.wait()
        if self._call is not None:
            await self._call.wait_for_connection()


class _FailedCall:
    """Reports the error of a call that ended with no live attempt."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self._error = error

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return self._error.initial_metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return self._error.trailing_metadata()  # type: ignore[return-value]

    async def code(self) -> grpc.StatusCode:
        return self._error.code()

    async def details(self) -> str:
        return self._error.details() or ""


class UnaryUnaryCall(
    _MeshCall[RequestT, ResponseT], grpc.aio.UnaryUnaryCall[RequestT, ResponseT]
):
    def __init__(self, setup: CallSetup, timeout: float | None) -> None:
        super().__init__(setup, timeout)
        self._result: asyncio.Future[ResponseT] | None = None

    def __await__(self) -> Generator[Any, None, ResponseT]:
        if self._result is None:
            self._result = asyncio.ensure_future(self._unary_result())
        return self._result.__await__()

    def cancel(self) -> bool:
        if self._result is not None:
            self._result.cancel()
        return super().cancel()


class UnaryStreamCall(
    _MeshCall[RequestT, ResponseT], grpc.aio.UnaryStreamCall[RequestT, ResponseT]
):
    def __init__(self, setup: CallSetup, timeout: float | None) -> None:
        super().__init__(setup, timeout)
        self._iterator: AsyncIterator[ResponseT] | None = None

    def __aiter__(self) -> AsyncIterator[ResponseT]:
        if self._iterator is None:
            self._iterator = self._responses()
        return self._iterator

    async def read(self) -> Any:
        try:
            return await anext(self.__aiter__())
        except StopAsyncIteration:
            return grpc.aio.EOF  # type: ignore[attr-defined]


class StreamUnaryCall(
    _MeshCall[RequestT, ResponseT], grpc.aio.StreamUnaryCall[RequestT, ResponseT]
):
    def __await__(self) -> Generator[Any, None, ResponseT]:
        return self._await_single().__await__()

    async def _await_single(self) -> ResponseT:
        return await (await self._single())  # type: ignore[no-any-return]

    async def write(self, request: RequestT) -> None:
        await (await self._single()).write(request)

    async def done_writing(self) -> None:
        await (await self._single()).done_writing()


class StreamStreamCall(
    _MeshCall[RequestT, ResponseT], grpc.aio.StreamStreamCall[RequestT, ResponseT]
):
    def __aiter__(self) -> AsyncIterator[ResponseT]:
        return self._iterate_single()

    async def _iterate_single(self) -> AsyncIterator[ResponseT]:
        async for response in await self._single():
            yield response

    async def read(self) -> Any:
        return await (await self._single()).read()

    async def write(self, request: RequestT) -> None:
        await (await self._single()).write(request)

    async def done_writing(self) -> None:
        await (await self._single()).done_writing()
