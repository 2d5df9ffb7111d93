"""Balancing policies, outlier ejection, retry budget and method rules."""

from __future__ import annotations

import random
from collections import Counter

import grpc
import grpc.aio
import pytest

import protos  # noqa: F401 - registers the contracts in the descriptor pool
from registry.balancer import (
    Ejector,
    EndpointState,
    EndpointStats,
    LeastRequest,
    PeakEwma,
    RoundRobin,
    make_policy,
)
from registry.model import Endpoint, InstanceInfo
from registry.retry import RetryBudget, method_rules, never_sent


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(name: str, in_flight: int = 0, latency: float = 0.01) -> EndpointState:
    endpoint = Endpoint(
        "svc", name, f"127.0.0.1:{1000 + len(name)}", InstanceInfo(name)
    )
    stats = EndpointStats(endpoint.address, in_flight=in_flight, latency_ewma=latency)
    return EndpointState(endpoint, channel=None, stats=stats)


def test_round_robin_visits_each_in_turn():
    states = [state("a"), state("b"), state("c")]
    policy = RoundRobin()

    picked = [policy.pick(states).instance_id for _ in range(6)]

    assert picked == ["a", "b", "c", "a", "b", "c"]


def test_least_request_avoids_loaded_endpoint():
    states = [state("idle"), state("busy", in_flight=50)]
    policy = LeastRequest(random.Random(1))

    picked = Counter(policy.pick(states).instance_id for _ in range(100))

    assert picked["busy"] == 0


def test_ewma_prefers_fast_endpoint():
    states = [
        state("fast", latency=0.01),
        state("slow", latency=0.1),
        state("fast2", latency=0.01),
    ]
    policy = PeakEwma(random.Random(2))

    picked = Counter(policy.pick(states).instance_id for _ in range(300))

    assert picked["slow"] == 0


def test_unknown_policy_names_known_ones():
    with pytest.raises(ValueError, match="round_robin"):
        make_policy("fastest")


def test_ejection_never_takes_last_endpoint():
    clock = FakeClock()
    ejector = Ejector(clock=clock)
    only = [state("a")]

    assert not ejector.try_eject(only[0], only)
    assert ejector.available(only) == only


def test_ejection_is_bounded_by_share():
    clock = FakeClock()
    ejector = Ejector(max_share=0.5, clock=clock)
    states = [state(name) for name in "abcd"]

    ejected = [ejector.try_eject(s, states) for s in states]

    assert ejected == [True, True, False, False]
    assert [s.instance_id for s in ejector.available(states)] == ["c", "d"]


def test_ejection_time_grows_and_expires():
    clock = FakeClock()
    ejector = Ejector(base=1.0, maximum=30.0, clock=clock)
    states = [state("a"), state("b"), state("c")]

    ejector.try_eject(states[0], states)
    first = ejector.duration(states[0])
    clock.now += first
    ejector.extend(states[0])
    second = ejector.duration(states[0])

    assert first == 1.0
    assert second == 2.0
    clock.now += second
    assert states[0] in ejector.available(states)


def test_retry_budget_allows_share_of_calls():
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, floor_per_second=0, clock=clock)
    for _ in range(100):
        budget.record_call()

    allowed = sum(budget.try_spend() for _ in range(50))

    assert allowed == 20


def test_retry_budget_floor_refills_per_second():
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, floor_per_second=3, clock=clock)

    first = sum(budget.try_spend() for _ in range(10))
    clock.now += 1.0
    second = sum(budget.try_spend() for _ in range(10))

    assert first == 3
    assert second == 3


def test_method_rules_come_from_contract():
    increment = method_rules("/mesh.counter.v1.CounterService/Increment")
    get = method_rules("/mesh.counter.v1.CounterService/GetCounter")
    login = method_rules("/mesh.user.v1.UserService/Login")
    unknown = method_rules("/no.such.Service/Method")

    assert increment.idempotent
    assert increment.has_request_id
    assert get.idempotent
    assert not get.has_request_id
    assert not login.idempotent
    assert not unknown.idempotent


def error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, ""
    )


def test_connection_refused_was_never_sent():
    assert never_sent(
        error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    )
    assert not never_sent(error(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    assert not never_sent(error(grpc.StatusCode.INTERNAL, "failed to connect"))
