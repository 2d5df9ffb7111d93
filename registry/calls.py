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

from registry import metrics
from registry.backoff import Backoff
from registry.balancer import EndpointState
from registry.retry import MethodRules, RetryBudget, never_sent

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
T = TypeVar("T")


# Not frozen: a frozen dataclass's __init__ costs about a microsecond more,
# and one is built for every call.
@dataclass(slots=True)
class CallSetup:
    """The parts of its channel that a call uses."""

    service: str
    method: str
    rules: MethodRules
    ready: Callable[[], bool]
    wait_ready: Callable[[float | None], Awaitable[None]]
    pick: Callable[[set[EndpointState]], EndpointState]
    start: Callable[[EndpointState, float | None], Any]
    on_unavailable: Callable[[EndpointState], None]
    budget: RetryBudget
    max_attempts: int


# Retry n waits a random time up to min(RETRY_WAIT_MAX, RETRY_WAIT_BASE * 2**(n-1)),
# by tenacity's full-jitter strategy. The loop around it is written out below
# because building a tenacity.AsyncRetrying per call cost about a quarter of
# the client's time per call (profiled with pyinstrument, docs/benchmarks.md).
RETRY_WAIT_BASE = 0.02
RETRY_WAIT_MAX = 0.5
_RETRY_WAIT = Backoff(initial=RETRY_WAIT_BASE, maximum=RETRY_WAIT_MAX)


class NoEndpointError(grpc.aio.AioRpcError):
    """UNAVAILABLE raised before any request was sent: nothing to pick from."""


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
        # The event and the lock are created on first use, because most unary
        # calls need neither and each costs an allocation on the hot path.
        self._is_started = False
        self._started: asyncio.Event | None = None
        self._cancelled = False
        self._callbacks: list[Callable[[Any], None]] = []
        self._got_response = False
        # A writer task and a reader task may both start a streaming call.
        self._start_lock: asyncio.Lock | None = None
        # The task of a slow step (waiting for discovery, a retry's backoff),
        # so that cancel() can end it.
        self._slow_step: asyncio.Future[Any] | None = None

    # --- attempts --------------------------------------------------------------

    async def _before_retry(self, error: grpc.aio.AioRpcError, attempt: int) -> None:
        """Wait before attempt + 1, or raise error when no retry is allowed.

        Retries stop after max_attempts, or when the wait would reach the
        deadline. The retry rules are checked first, as they spend budget.
        """
        if not self._retryable(error):
            raise error
        delay = _RETRY_WAIT.delay_for(attempt)
        if attempt >= self._setup.max_attempts:
            raise error
        now = asyncio.get_running_loop().time()
        if self._deadline is not None and now + delay >= self._deadline:
            raise error
        metrics.RETRIES.labels(self._setup.service).inc()
        await self._interruptible(asyncio.sleep(delay))

    async def _interruptible(self, step: Awaitable[T]) -> T:
        """Run a slow step in its own task, which cancel() cancels.

        The caller then gets CancelledError while its own task is not
        cancelled, as when a grpc.aio call is cancelled.
        """
        task = asyncio.ensure_future(step)
        self._slow_step = task
        try:
            return await task
        finally:
            self._slow_step = None

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

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return self._deadline - asyncio.get_running_loop().time()

    async def _begin(self, tried: set[EndpointState]) -> tuple[EndpointState, Any]:
        """Pick an endpoint not tried yet, if any, and start the real call."""
        try:
            if not self._setup.ready():
                await self._interruptible(self._setup.wait_ready(self._remaining()))
            state = self._setup.pick(tried)
        except grpc.aio.AioRpcError as exc:
            self._error = exc
            self._set_started()
            raise
        tried.add(state)
        call = self._setup.start(state, self._remaining())
        for callback in self._callbacks:
            call.add_done_callback(callback)
        self._call = call
        self._error = None
        state.call_started()
        self._set_started()
        return state, call

    def _set_started(self) -> None:
        self._is_started = True
        if self._started is not None:
            self._started.set()

    async def _wait_started(self) -> None:
        if self._is_started:
            return
        if self._started is None:
            self._started = asyncio.Event()
        await self._started.wait()

    def _failed(self, state: EndpointState, error: grpc.aio.AioRpcError) -> None:
        self._error = error
        if error.code() == grpc.StatusCode.UNAVAILABLE:
            self._setup.on_unavailable(state)

    async def _unary_result(self) -> ResponseT:
        self._setup.budget.record_call()
        tried: set[EndpointState] = set()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._unary_attempt(tried)
            except grpc.aio.AioRpcError as exc:
                await self._before_retry(exc, attempt)

    async def _unary_attempt(self, tried: set[EndpointState]) -> ResponseT:
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

    async def _responses(self) -> AsyncIterator[ResponseT]:
        self._setup.budget.record_call()
        tried: set[EndpointState] = set()
        attempt = 0
        while True:
            attempt += 1
            try:
                state, call = await self._begin(tried)
            except grpc.aio.AioRpcError as exc:
                await self._before_retry(exc, attempt)
                continue
            failed = True
            error: grpc.aio.AioRpcError | None = None
            try:
                async for response in call:
                    self._got_response = True
                    yield response
                failed = False
            except grpc.aio.AioRpcError as exc:
                self._failed(state, exc)
                error = exc
            finally:
                state.call_done(failed=failed)
                # A consumer that stops reading early ends the stream.
                call.cancel()
            if error is None:
                return
            await self._before_retry(error, attempt)

    async def _single(self) -> Any:
        """Start a call that streams requests: one attempt, no retry."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
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
        if self._slow_step is not None:
            self._slow_step.cancel()
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
        await self._wait_started()
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
        await self._wait_started()
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
        self._awaited = False
        self._outcome_value: ResponseT | None = None
        self._outcome_error: BaseException | None = None
        self._finished = False
        self._shared: asyncio.Future[ResponseT] | None = None

    def __await__(self) -> Generator[Any, None, ResponseT]:
        # The first await runs the call in the awaiting task itself, because a
        # task of its own per call would cost a loop iteration on the hot
        # path. Later awaits share its outcome.
        if self._awaited:
            return self._await_outcome().__await__()
        self._awaited = True
        return self._await_first().__await__()

    async def _await_first(self) -> ResponseT:
        if self._cancelled:
            raise asyncio.CancelledError
        try:
            response = await self._unary_result()
        except BaseException as exc:
            self._finish(None, exc)
            raise
        self._finish(response, None)
        return response

    def _finish(self, response: ResponseT | None, error: BaseException | None) -> None:
        self._finished = True
        self._outcome_value = response
        self._outcome_error = error
        shared = self._shared
        if shared is None or shared.done():
            return
        if isinstance(error, asyncio.CancelledError):
            shared.cancel()
        elif error is not None:
            shared.set_exception(error)
        else:
            shared.set_result(response)  # type: ignore[arg-type]

    async def _await_outcome(self) -> ResponseT:
        if not self._finished:
            if self._shared is None:
                self._shared = asyncio.get_running_loop().create_future()
            return await self._shared
        if self._outcome_error is not None:
            raise self._outcome_error
        return self._outcome_value  # type: ignore[return-value]


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
