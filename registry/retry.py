"""Retry rules: which calls may be sent again, and how many retries a
channel may send at all.

A method may be retried on another endpoint after UNAVAILABLE when its
contract marks it `option idempotency_level = IDEMPOTENT` or
`NO_SIDE_EFFECTS`. Any other method is retried only when the request
certainly never reached a server: the connection to the endpoint failed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import grpc.aio
from google.protobuf import descriptor_pool
from google.protobuf.descriptor_pb2 import MethodOptions

# Messages that gRPC core puts in UNAVAILABLE when no connection was made,
# so the request was never sent. Matched case-insensitively.
_NOT_SENT_MARKERS = (
    "failed to connect",
    "connection refused",
    "connections to all backends failing",
    "no route to host",
    "dns resolution failed",
)


@dataclass(frozen=True, slots=True)
class MethodRules:
    """The retry rules that the contract sets for one method."""

    idempotent: bool
    has_request_id: bool


@functools.cache
def method_rules(method: str) -> MethodRules:
    """Read the rules of a method from its descriptor, by its gRPC path.

    `method` is the path a stub uses, such as
    `/mesh.counter.v1.CounterService/Increment`. Methods unknown to the
    default descriptor pool are treated as neither idempotent nor keyed.
    """
    full_name = method.lstrip("/").replace("/", ".")
    try:
        descriptor = descriptor_pool.Default().FindMethodByName(full_name)
    except KeyError:
        return MethodRules(idempotent=False, has_request_id=False)
    level = descriptor.GetOptions().idempotency_level
    field = descriptor.input_type.fields_by_name.get("request_id")
    return MethodRules(
        idempotent=level in {MethodOptions.IDEMPOTENT, MethodOptions.NO_SIDE_EFFECTS},
        has_request_id=field is not None and field.type == field.TYPE_STRING,
    )


def never_sent(error: grpc.aio.AioRpcError) -> bool:
    """True when the error shows that no connection carried the request."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    text = f"{error.details()} {error.debug_error_string()}".lower()
    return any(marker in text for marker in _NOT_SENT_MARKERS)


class RetryBudget:
    """Caps retries at a share of calls plus a small floor per second.

    Each call adds `ratio` of a token, up to `max_tokens`. A retry spends
    one token. When the tokens run out, up to `floor_per_second` retries a
    second are still allowed, so that a quiet channel can retry at all.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        floor_per_second: float = 10.0,
        max_tokens: float = 100.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.floor_per_second = floor_per_second
        self.max_tokens = max_tokens
        self._clock = clock
        self._tokens = 0.0
        self._floor_tokens = floor_per_second
        self._floor_updated = clock()

    def record_call(self) -> None:
        self._tokens = min(self.max_tokens, self._tokens + self.ratio)

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        # The small margin keeps float sums such as 5 x 0.2 from falling short.
        if self._tokens >= 1.0 - 1e-9:
            self._tokens -= 1.0
            return True
        now = self._clock()
        elapsed = now - self._floor_updated
        self._floor_updated = now
        self._floor_tokens = min(
            self.floor_per_second, self._floor_tokens + elapsed * self.floor_per_second
        )
        if self._floor_tokens >= 1.0:
            self._floor_tokens -= 1.0
            return True
        return False
