"""Endpoint state and the policies that pick one endpoint per call."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
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


@dataclass
class EndpointStats:
    """Calls sent to one endpoint by one channel."""

    address: str
    calls: int = 0
    failures: int = 0
    in_flight: int = 0


@dataclass(eq=False)
class EndpointState:
    """One endpoint with its own gRPC channel and call counters."""

    endpoint: Endpoint
    channel: grpc.aio.Channel
    stats: EndpointStats
    multicallables: dict[tuple[str, str], object] = field(default_factory=dict)

    @classmethod
    def open(cls, endpoint: Endpoint) -> EndpointState:
        channel = grpc.aio.insecure_channel(endpoint.address, options=CHANNEL_OPTIONS)
        return cls(endpoint, channel, EndpointStats(endpoint.address))

    def call_started(self) -> None:
        self.stats.calls += 1
        self.stats.in_flight += 1

    def call_done(self, *, failed: bool) -> None:
        self.stats.in_flight -= 1
        if failed:
            self.stats.failures += 1


class Policy(Protocol):
    """Chooses the endpoint for the next call from a non-empty list."""

    def pick(self, states: Sequence[EndpointState]) -> EndpointState: ...


class RoundRobin:
    """Each endpoint in turn, in a stable order."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, states: Sequence[EndpointState]) -> EndpointState:
        return states[next(self._counter) % len(states)]


POLICIES: dict[str, type[RoundRobin]] = {"round_robin": RoundRobin}


def make_policy(name: str) -> Policy:
    """Return a new policy object by name; unknown names raise ValueError."""
    try:
        return POLICIES[name]()
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        msg = f"policy: unknown balancing policy {name!r}; use one of {known}"
        raise ValueError(msg) from None
