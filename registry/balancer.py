"""Endpoint state, passive outlier ejection, and the balancing policies.

Policies pick one endpoint per call from those not ejected:

| name           | picks                                                      |
|----------------|------------------------------------------------------------|
| round_robin    | each endpoint in turn                                      |
| least_request  | the less loaded of two random endpoints (outstanding calls)|
| ewma           | the lower of two random endpoints by latency EWMA x load   |
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc.aio

from registry.model import Endpoint

# Keepalive pings find a dead connection between calls, so a replica that
# vanished without deregistering fails fast instead of hanging a call.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)

# (address, options) -> channel to that address.
ChannelFactory = Callable[[str, tuple[tuple[str, int], ...]], grpc.aio.Channel]

# Latency samples lose half their weight in this many seconds.
EWMA_HALF_LIFE = 5.0
# A new endpoint starts at this latency, so it is tried but not flooded.
EWMA_INITIAL = 0.010


@dataclass
class EndpointStats:
    """Calls sent to one endpoint by one channel."""

    address: str
    calls: int = 0
    failures: int = 0
    in_flight: int = 0
    ejections: int = 0
    latency_ewma: float = EWMA_INITIAL


@dataclass(eq=False)
class EndpointState:
    """One endpoint with its own gRPC channel, counters and ejection state.

    The channel is opened on the first call to the endpoint (`open_channel`),
    so a client that discovers many endpoints pays only for those it uses.
    """

    endpoint: Endpoint
    channel: grpc.aio.Channel | None
    stats: EndpointStats
    multicallables: dict[tuple[str, str], object] = field(default_factory=dict)
    ejected_until: float = 0.0
    returned_at: float = 0.0
    consecutive_ejections: int = 0
    probing: bool = False
    _ewma_time: float = field(default_factory=time.monotonic)
    # Opens the channel instead of grpc.aio.insecure_channel, as for mTLS.
    channel_factory: ChannelFactory | None = None

    @classmethod
    def open(
        cls, endpoint: Endpoint, channel_factory: ChannelFactory | None = None
    ) -> EndpointState:
        return cls(
            endpoint,
            None,
            EndpointStats(endpoint.address),
            channel_factory=channel_factory,
        )

    def open_channel(self) -> grpc.aio.Channel:
        """Return the endpoint's channel, creating it on first use."""
        if self.channel is not None:
            return self.channel
        if self.channel_factory is not None:
            self.channel = self.channel_factory(self.endpoint.address, CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.insecure_channel(
                self.endpoint.address, options=CHANNEL_OPTIONS
            )
        return self.channel

    async def close_channel(self, grace: float | None) -> None:
        if self.channel is not None:
            await self.channel.close(grace)

    @property
    def instance_id(self) -> str:
        return self.endpoint.instance_id

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until or self.probing

    def call_started(self) -> None:
        self.stats.calls += 1
        self.stats.in_flight += 1

    def call_done(self, *, failed: bool, latency: float | None = None) -> None:
        self.stats.in_flight -= 1
        if failed:
            self.stats.failures += 1
        if latency is not None:
            self._observe_latency(latency)

    def _observe_latency(self, latency: float) -> None:
        now = time.monotonic()
        weight = math.exp(-(now - self._ewma_time) * math.log(2) / EWMA_HALF_LIFE)
        self._ewma_time = now
        # Peak-sensitive: a slow sample replaces the average at once, and
        # fast samples pull it back down gradually.
        if latency > self.stats.latency_ewma:
            self.stats.latency_ewma = latency
        else:
            self.stats.latency_ewma = self.stats.latency_ewma * weight + latency * (
                1 - weight
            )


class Policy(Protocol):
    """Chooses the endpoint for the next call from a non-empty list."""

    def pick(self, states: Sequence[EndpointState]) -> EndpointState: ...


class RoundRobin:
    """Each endpoint in turn, in a stable order."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, states: Sequence[EndpointState]) -> EndpointState:
        return states[next(self._counter) % len(states)]


class LeastRequest:
    """Power of two choices over outstanding requests."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()  # noqa: S311 - balancing, not security

    def pick(self, states: Sequence[EndpointState]) -> EndpointState:
        if len(states) == 1:
            return states[0]
        first, second = self._rng.sample(list(states), 2)
        return first if self.load(first) <= self.load(second) else second

    def load(self, state: EndpointState) -> float:
        return float(state.stats.in_flight)


class PeakEwma(LeastRequest):
    """Power of two choices over latency EWMA times (outstanding + 1)."""

    def load(self, state: EndpointState) -> float:
        return state.stats.latency_ewma * (state.stats.in_flight + 1)


POLICIES: dict[str, Callable[[], Policy]] = {
    "round_robin": RoundRobin,
    "least_request": LeastRequest,
    "ewma": PeakEwma,
}


def make_policy(name: str) -> Policy:
    """Return a new policy object by name; unknown names raise ValueError."""
    try:
        return POLICIES[name]()
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        msg = f"policy: unknown balancing policy {name!r}; use one of {known}"
        raise ValueError(msg) from None


@dataclass
class Ejector:
    """Passive outlier ejection after connection-level failures.

    An endpoint is ejected for `base` seconds, doubled for each ejection
    since it last stayed healthy for `maximum` seconds, up to `maximum`. At
    most `max_share` of the endpoints are ejected at once, never the last.
    """

    base: float = 1.0
    maximum: float = 30.0
    max_share: float = 0.5
    clock: Callable[[], float] = time.monotonic

    def available(self, states: Sequence[EndpointState]) -> list[EndpointState]:
        """Return the endpoints that may take calls now."""
        now = self.clock()
        usable = [state for state in states if not state.ejected(now)]
        return usable or list(states)

    def try_eject(self, state: EndpointState, states: Sequence[EndpointState]) -> bool:
        """Eject state unless that breaks the bounds; True when ejected."""
        now = self.clock()
        if state.ejected(now):
            return False
        ejected = sum(1 for other in states if other.ejected(now))
        limit = max(1, math.floor(len(states) * self.max_share))
        if ejected + 1 > limit or ejected + 1 >= len(states):
            return False
        if now - state.returned_at > self.maximum:
            state.consecutive_ejections = 0
        state.consecutive_ejections += 1
        state.stats.ejections += 1
        exponent = min(state.consecutive_ejections - 1, 16)
        state.ejected_until = now + min(self.maximum, self.base * 2**exponent)
        return True

    def extend(self, state: EndpointState) -> None:
        """Eject again after a failed probe, for a longer time."""
        state.consecutive_ejections += 1
        exponent = min(state.consecutive_ejections - 1, 16)
        state.ejected_until = self.clock() + min(self.maximum, self.base * 2**exponent)

    def restore(self, state: EndpointState) -> None:
        """Return an endpoint after a successful probe."""
        state.ejected_until = 0.0
        state.probing = False
        state.returned_at = self.clock()

    def duration(self, state: EndpointState) -> float:
        return max(0.0, state.ejected_until - self.clock())
