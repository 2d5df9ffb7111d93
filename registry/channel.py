"""MeshChannel: a balanced channel that generated stubs accept unchanged.

    stub = CounterServiceStub(mesh.channel("mesh.counter.v1.CounterService"))

The channel keeps one grpc.aio channel per endpoint that discovery reports,
opened on the endpoint's first call, picks an endpoint for each call with its
balancing policy, and closes the channel of an endpoint once discovery
removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from registry import metrics
from registry.balancer import (
    Ejector,
    EndpointState,
    EndpointStats,
    Policy,
    make_policy,
)
from registry.calls import (
    CallSetup,
    NoEndpointError,
    StreamStreamCall,
    StreamUnaryCall,
    UnaryStreamCall,
    UnaryUnaryCall,
)
from registry.discovery import Resolver
from registry.identity_guard import IdentityGuard
from registry.mesh_tls import ChannelFactory
from registry.model import Endpoint
from registry.retry import RetryBudget, method_rules

logger = logging.getLogger(__name__)

# How long a call waits for the first discovery list when it has no deadline.
READY_TIMEOUT = 5.0
# In-flight calls on a removed endpoint get this long before its channel closes.
CLOSE_GRACE = 10.0
# Calls without a timeout of their own get this deadline, in seconds.
DEFAULT_TIMEOUT = 10.0
# Attempts per call, the first one included.
MAX_ATTEMPTS = 3
PROBE_TIMEOUT = 1.0

Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None


class MeshChannel(grpc.aio.Channel):
    """A grpc.aio.Channel that spreads calls over a service's live endpoints."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        policy: str = "round_robin",
        default_timeout: float | None = DEFAULT_TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
        budget: RetryBudget | None = None,
        ejector: Ejector | None = None,
        channel_factory: ChannelFactory | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts: must be at least 1, got {max_attempts}")
        self.service = resolver.service
        self.default_timeout = default_timeout
        self.max_attempts = max_attempts
        self.budget = budget or RetryBudget()
        self.ejector = ejector or Ejector()
        self._resolver = resolver
        self._policy: Policy = make_policy(policy)
        self._probes: set[asyncio.Task[None]] = set()
        self._states: dict[str, EndpointState] = {}
        self._order: list[EndpointState] = []
        self._retired: dict[str, EndpointStats] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        # mTLS: endpoint channels check the service's identity (registry.mesh_tls).
        self._channel_factory = channel_factory
        self._guard = IdentityGuard(channel_factory) if channel_factory else None
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
                self._states[instance_id] = EndpointState.open(
                    endpoint, self._channel_factory
                )
                logger.debug("%s: added endpoint %s", self.service, endpoint.address)
            else:
                existing.endpoint = endpoint
        self._order = [self._states[key] for key in sorted(self._states)]
        metrics.ENDPOINTS.labels(self.service).set(len(self._order))

    def _retire(self, instance_id: str) -> None:
        state = self._states.pop(instance_id)
        self._retired[instance_id] = state.stats
        task = asyncio.get_running_loop().create_task(state.close_channel(CLOSE_GRACE))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _ready(self) -> bool:
        return self._resolver.ready

    async def _wait_ready(self, timeout: float | None) -> None:
        """Wait for discovery's first list, at most READY_TIMEOUT seconds."""
        wait = READY_TIMEOUT if timeout is None else min(timeout, READY_TIMEOUT)
        with contextlib.suppress(TimeoutError):
            await self._resolver.wait_ready(max(wait, 0.0))

    def _pick(self, tried: set[EndpointState]) -> EndpointState:
        if self._closed:
            raise _unavailable("the mesh channel is closed")
        if not self._order:
            raise _unavailable(
                f"no live endpoint for {self.service} in namespace "
                f"{self._resolver.namespace!r}; check that a replica is running "
                "and registered (meshctl ls)"
            )
        order = self._guard.allowed(self._order) if self._guard else self._order
        if not order:
            raise _unavailable(
                f"every endpoint of {self.service} presented another identity; "
                "see the log for their addresses"
            )
        candidates = self.ejector.available(order)
        if not tried:
            return self._policy.pick(candidates)
        untried = [state for state in candidates if state not in tried]
        return self._policy.pick(untried or candidates)

    def _on_unavailable(self, state: EndpointState) -> None:
        """Eject an endpoint that failed at the connection level."""
        if state.endpoint.instance_id not in self._states:
            return
        if self._guard is not None:
            self._guard.check_later(state)
        if not self.ejector.try_eject(state, self._order):
            return
        metrics.EJECTIONS.labels(self.service).inc()
        logger.warning(
            "%s: ejected %s at %s for %.1f s after a connection failure",
            self.service,
            state.instance_id,
            state.endpoint.address,
            self.ejector.duration(state),
        )
        task = asyncio.get_running_loop().create_task(self._probe_later(state))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe_later(self, state: EndpointState) -> None:
        """Return an ejected endpoint once a health check passes."""
        stub = health_pb2_grpc.HealthStub(state.open_channel())
        while True:
            await asyncio.sleep(self.ejector.duration(state))
            # Discovery may have removed the endpoint during the sleep. Its
            # channel is then closed, so a probe would raise UsageError.
            if self._closed or self._states.get(state.instance_id) is not state:
                return
            state.probing = True
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=self.service),
                    timeout=PROBE_TIMEOUT,
                )
            except grpc.aio.AioRpcError:
                serving = False
            else:
                serving = reply.status == health_pb2.HealthCheckResponse.SERVING
            if serving:
                self.ejector.restore(state)
                logger.info(
                    "%s: %s is back after a passing probe",
                    self.service,
                    state.instance_id,
                )
                return
            self.ejector.extend(state)
            state.probing = False

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
        if self._guard is not None:
            await self._guard.close()
        for probe in self._probes:
            probe.cancel()
        states = list(self._states.values())
        self._states.clear()
        self._order = []
        await asyncio.gather(*(state.close_channel(grace) for state in states))
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
    """The callable a stub keeps for one method; calling it starts a mesh call."""

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
        self._rules = method_rules(method)

    def __call__(self, request: Any = None, **kwargs: Any) -> Any:
        channel = self._channel
        timeout = kwargs.pop("timeout", None)
        if timeout is None:
            timeout = channel.default_timeout
        if (
            self._rules.has_request_id
            and isinstance(request, Message)
            and not getattr(request, "request_id", "")
        ):
            # One id for every attempt, so that the server applies it once.
            keyed = type(request)()
            keyed.CopyFrom(request)
            keyed.request_id = uuid.uuid4().hex  # type: ignore[attr-defined]
            request = keyed

        def start(state: EndpointState, remaining: float | None) -> Any:
            return self._real(state)(request, timeout=remaining, **kwargs)

        setup = CallSetup(
            service=channel.service,
            method=self._method,
            rules=self._rules,
            ready=channel._ready,  # noqa: SLF001
            wait_ready=channel._wait_ready,  # noqa: SLF001
            pick=channel._pick,  # noqa: SLF001
            start=start,
            on_unavailable=channel._on_unavailable,  # noqa: SLF001
            budget=channel.budget,
            max_attempts=channel.max_attempts,
        )
        return _CALL_TYPES[self._shape](setup, timeout)

    def _real(self, state: EndpointState) -> Any:
        key = (self._shape, self._method)
        real = state.multicallables.get(key)
        if real is None:
            factory = getattr(state.open_channel(), self._shape)
            real = factory(self._method, self._serializer, self._deserializer, True)  # noqa: FBT003
            state.multicallables[key] = real
        return real


def _unavailable(details: str) -> grpc.aio.AioRpcError:
    return NoEndpointError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details=details,
        debug_error_string=None,
    )
