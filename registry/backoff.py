"""Capped, jittered exponential backoff built on tenacity's wait strategies.

Loops that run forever (keepalive, re-registration, re-listing) cannot use a
tenacity retry block around one call, so they ask this object for the next
delay instead. Jitter spreads clients out after a shared outage.
"""

from __future__ import annotations

from typing import Any

import tenacity


class Backoff:
    """Delays of initial * 2**n seconds with full jitter, capped at maximum."""

    def __init__(self, initial: float = 0.2, maximum: float = 5.0) -> None:
        self._wait = tenacity.wait_random_exponential(multiplier=initial, max=maximum)
        self._attempt = 0

    def next_delay(self) -> float:
        """Return the delay before the next attempt and count the attempt."""
        self._attempt += 1
        state: Any = _AttemptState(self._attempt)
        return float(self._wait(state))

    def delay_for(self, attempt: int) -> float:
        """Return the delay before retry number attempt (from 1), statelessly."""
        state: Any = _AttemptState(attempt)
        return float(self._wait(state))

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt


class _AttemptState:
    """The one attribute of tenacity.RetryCallState that wait strategies read."""

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number
