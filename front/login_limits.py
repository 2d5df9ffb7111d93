"""Limits on failed logins, per username and per client address.

    limiter = LoginLimiter(LoginLimits())
    attempt = limiter.start(username, address)   # raises TooManyLoginsError
    ... call UserService.Login ...
    attempt.succeeded()  or  attempt.failed()  or  attempt.cancelled()

Each attempt counts as a failure from its start, so that many concurrent
attempts cannot all pass the check before the first failure is recorded. A
success or a cancellation (a backend error, not a wrong password) takes it
back. The counts live in this process only, so each front replica keeps its
own.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from front.errors import FrontError

Clock = Callable[[], float]
# Keys tracked per window. Past it, expired keys are dropped, then the oldest.
# This bounds the memory that an attacker can fill with many usernames.
DEFAULT_MAX_KEYS = 10_000


@dataclass(frozen=True)
class LoginLimits:
    per_user: int = 5
    per_address: int = 20
    window_seconds: float = 60.0


class TooManyLoginsError(FrontError):
    """429: too many failed logins; `retry_after` is in whole seconds."""

    def __init__(self, limited_by: str, retry_after: int) -> None:
        message = f"too many failed logins {limited_by}; try again in {retry_after} s"
        headers = {"Retry-After": str(retry_after)}
        super().__init__(429, "RESOURCE_EXHAUSTED", message, headers)
        self.retry_after = retry_after


class SlidingWindow:
    """Event times per key, forgotten `window` seconds after each event."""

    def __init__(
        self, window: float, clock: Clock, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def count(self, key: str) -> int:
        events = self._events.get(key)
        if events is None:
            return 0
        self._expire(key, events)
        return len(events)

    def wait_time(self, key: str, limit: int) -> float:
        """Return seconds until key has fewer than limit events; 0 if it has."""
        if self.count(key) < limit:
            return 0.0
        events = self._events[key]
        # The count drops below limit when the event at index -limit expires.
        return events[-limit] + self.window - self.clock()

    def add(self, key: str) -> None:
        if key not in self._events and len(self._events) >= self.max_keys:
            self._make_room()
        self._events.setdefault(key, deque()).append(self.clock())

    def remove_latest(self, key: str) -> None:
        events = self._events.get(key)
        if events:
            events.pop()
        if not events:
            self._events.pop(key, None)

    def clear(self, key: str) -> None:
        self._events.pop(key, None)

    def __len__(self) -> int:
        return len(self._events)

    def _expire(self, key: str, events: deque[float]) -> None:
        horizon = self.clock() - self.window
        while events and events[0] <= horizon:
            events.popleft()
        if not events:
            del self._events[key]

    def _make_room(self) -> None:
        for key, events in list(self._events.items()):
            self._expire(key, events)
        if len(self._events) >= self.max_keys:
            # Dicts keep insertion order: drop the key tracked the longest.
            del self._events[next(iter(self._events))]


class LoginAttempt:
    """One login in progress, counted as a failure until it is settled."""

    def __init__(self, limiter: LoginLimiter, user: str, address: str) -> None:
        self._limiter = limiter
        self._user = user
        self._address = address

    def succeeded(self) -> None:
        """Forget the user's failures, and take this attempt off the address."""
        self._limiter.users.clear(self._user)
        self._limiter.addresses.remove_latest(self._address)

    def failed(self) -> None:
        """Keep the failure that start() recorded."""

    def cancelled(self) -> None:
        """Take the attempt back: the password was never checked."""
        self._limiter.users.remove_latest(self._user)
        self._limiter.addresses.remove_latest(self._address)


class LoginLimiter:
    def __init__(self, limits: LoginLimits, clock: Clock = time.monotonic) -> None:
        self.limits = limits
        self.users = SlidingWindow(limits.window_seconds, clock)
        self.addresses = SlidingWindow(limits.window_seconds, clock)

    def start(self, username: str, address: str) -> LoginAttempt:
        """Record a login attempt, or raise TooManyLoginsError if one is over."""
        # Usernames are lowercase, so every spelling of one counts together.
        user = username.strip().lower()
        address_wait = self.addresses.wait_time(address, self.limits.per_address)
        if address_wait > 0:
            raise TooManyLoginsError("from this address", _whole_seconds(address_wait))
        user_wait = self.users.wait_time(user, self.limits.per_user)
        if user_wait > 0:
            raise TooManyLoginsError("for this user", _whole_seconds(user_wait))
        self.users.add(user)
        self.addresses.add(address)
        return LoginAttempt(self, user, address)


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
