"""How much each benchmark does: the full suite, and a tiny size for the smoke test."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    """Repeat counts and loads shared by the figures."""

    runs: int = 5
    seconds: float = 3.0
    resolvers: int = 50
    registrations: int = 20
    callers: int = 32
    balancing_callers: int = 16
    counter_callers: int = 64
    front_connections: int = 32
    instances: int = 1000
    keepalive_seconds: float = 6.0


FULL = Size()

TINY = Size(
    runs=1,
    seconds=0.3,
    resolvers=3,
    registrations=2,
    callers=4,
    balancing_callers=4,
    counter_callers=8,
    front_connections=4,
    instances=20,
    keepalive_seconds=1.2,
)
