"""MeshChannel: a balanced channel that generated stubs accept unchanged.

    stub = CounterServiceStub(mesh.channel("mesh.counter.v1.CounterService"))

The channel keeps one grpc.aio channel per endpoint that discovery reports,
picks an endpoint for each call with its balancing policy, and closes the
channel of an endpoint once discovery removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio

from registry.balancer import EndpointState, EndpointStats, Policy, make_policy
from registry.calls import (
    StreamStreamCall,
    StreamUnaryCall,
    UnaryStreamCall,
    UnaryUnaryCall,
)
from registry.discovery import Resolver
from registry.model import Endpoint

logger = logging.getLogger(__name__)

# How long a call waits for the first discovery list when it has no deadline.
READY_TIMEOUT = 5.0
# In-flight calls on a removed endpoint get this long before its channel closes.
CLOSE_GRACE = 10.0

Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None


class MeshChannel(grpc.aio.Channel):
    """A grpc.aio.Channel that spreads calls over a service's live endpoints."""

    def __init__(self, resolver: Resolver, *, policy: str = "round_robin") -> None:
        self.service = resolver.service
        self._resolver = resolver
        self._policy: Policy = make_policy(policy)
        self._states: dict[str, EndpointState] = {}
        self._order: list[EndpointState] = []
        self._retired: dict[str, EndpointStats] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        resolver.add_listener(self._sync)
        self._sync(resolver.snapshot())

    def statistics(self) -> dict[str, EndpointStats]:
        """Return call counters by instance id, for live and removed endpoints."""
        live = {instance: state.stats for instance, state in self._states.items()}
        return {**self._retired, **live}

    def endpoints(self) -> list[Endpoint]:
        return [state.endpoint for state in self._order]

    # --- endpoint set ---------------------------------------------------------

    def _sync(self, snapshot: Mapping[str, Endpoint]) -> None:
        if self._closed:
            return
        for instance_id in list(self._states):
            current = snapshot.get(instance_id)
            state = self._states[instance_id]
            if current is None or current.address != state.endpoint.address:
                self._retire(instance_id)
        for instance_id, endpoint in snapshot.items():
            existing = self._states.get(instance_id)
            if existing is None:
                self._states[instance_id] = EndpointState.open(endpoint)
                logger.debug("%s: opened channel to %s", self.service, endpoint.address)
            else:
                existing.endpoint = endpoint
        self._order = [self._states[key] for key in sorted(self._states)]

    def _retire(self, instance_id: str) -> None:
        state = self._states.pop(instance_id)
        self._retired[instance_id] = state.stats
        task = asyncio.get_running_loop().create_task(state.channel.close(CLOSE_GRACE))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _pick(self, timeout: float | None) -> EndpointState:
        if not self._resolver.ready:
            wait = READY_TIMEOUT if timeout is None else min(timeout, READY_TIMEOUT)
            with contextlib.suppress(TimeoutError):
                await self._resolver.wait_ready(wait)
        if self._closed:
            raise _unavailable("the mesh channel is closed")
        if not self._order:
            raise _unavailable(
                f"no live endpoint for {self.service} in namespace "
                f"{self._resolver.namespace!r}; check that a replica is running "
                "and registered (meshctl ls)"
            )
        return self._policy.pick(self._order)

    # --- grpc.aio.Channel -----------------------------------------------------

    def unary_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return _MultiCallable(
            self, "unary_unary", method, request_serializer, response_deserializer
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return _MultiCallable(
            self, "unary_stream", method, request_serializer, response_deserializer
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return _MultiCallable(
            self, "stream_unary", method, request_serializer, response_deserializer
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return _MultiCallable(
            self, "stream_stream", method, request_serializer, response_deserializer
        )

    async def close(self, grace: float | None = None) -> None:
        self._closed = True
        states = list(self._states.values())
        self._states.clear()
        self._order = []
        await asyncio.gather(*(state.channel.close(grace) for state in states))
        await asyncio.gather(*self._closing, return_exceptions=True)

    def get_state(
        self,
        try_to_connect: bool = False,  # noqa: ARG002 - every endpoint channel connects on its own
    ) -> grpc.ChannelConnectivity:
        if self._closed:
            return grpc.ChannelConnectivity.SHUTDOWN
        if self._order:
            return grpc.ChannelConnectivity.READY
        return grpc.ChannelConnectivity.TRANSIENT_FAILURE

    async def wait_for_state_change(
        self, last_observed_state: grpc.ChannelConnectivity
    ) -> None:
        await self._resolver.wait_for(
            lambda _: self.get_state() != last_observed_state, timeout=3600
        )

    async def channel_ready(self) -> None:
        """Wait until discovery has at least one endpoint for the service."""
        await self._resolver.wait_for(bool, timeout=3600)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


_CALL_TYPES: dict[str, type[Any]] = {
    "unary_unary": UnaryUnaryCall,
    "unary_stream": UnaryStreamCall,
    "stream_unary": StreamUnaryCall,
    "stream_stream": StreamStreamCall,
}


class _MultiCallable:
    """What a stub holds for one method: calling it starts a deferred call."""

    def __init__(
        self,
        channel: MeshChannel,
        shape: str,
        method: str,
        serializer: Serializer,
        deserializer: Deserializer,
    ) -> None:
        self._channel = channel
        self._shape = shape
        self._method = method
        self._serializer = serializer
        self._deserializer = deserializer

    def __call__(self, request: Any = None, **kwargs: Any) -> Any:
        timeout: float | None = kwargs.get("timeout")

        def start(state: EndpointState) -> Any:
            return self._real(state)(request, **kwargs)

        return _CALL_TYPES[self._shape](self._channel._pick, start, timeout)  # noqa: SLF001

    def _real(self, state: EndpointState) -> Any:
        key = (self._shape, self._method)
        real = state.multicallables.get(key)
        if real is None:
            factory = getattr(state.channel, self._shape)
            real = factory(self._method, self._serializer, self._deserializer, True)  # noqa: FBT003
            state.multicallables[key] = real
        return real


def _unavailable(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details=details,
        debug_error_string=None,
    )
