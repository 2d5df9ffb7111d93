"""A replica 10x slower than the others gets few calls under load-aware policies."""

from __future__ import annotations

import pytest

from protos import counter_pb2_grpc
from tests.faults.harness import (
    FAKE_MODULE,
    SERVICE,
    exactly,
    instance_ids,
    start_replicas,
)
from tests.faults.results import ScenarioResult

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FAST_DELAY = 0.005
SLOW_DELAY = 10 * FAST_DELAY
CALLS_PER_POLICY = 600
# "Far fewer than a third": at most 20 % of the calls, against 33 % for
# round robin.
MAX_SLOW_SHARE = 0.2


async def test_slow_replica_share_by_policy(
    etcd, mesh, processes, results, steady_load
):
    fast = await start_replicas(
        processes, etcd, FAKE_MODULE, 2, {"FAKE_SERVICE_DELAY": str(FAST_DELAY)}
    )
    (slow,) = await start_replicas(
        processes, etcd, FAKE_MODULE, 1, {"FAKE_SERVICE_DELAY": str(SLOW_DELAY)}
    )
    await mesh.resolver(SERVICE).wait_for(
        exactly(instance_ids([*fast, slow])), timeout=10
    )
    shares: dict[str, float] = {}
    calls = failed = 0

    for policy in ("round_robin", "least_request", "ewma"):
        stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE, policy=policy))
        load = steady_load(stub, f"fault-slow-{policy}", pause=0.0)
        await load.wait_acks(CALLS_PER_POLICY)
        report = await load.stop()
        shares[policy] = round(report.served[slow.instance_id] / report.acked, 3)
        calls += report.calls
        failed += report.failed

    results.record(
        ScenarioResult(
            8,
            "one replica 10x slower (50 ms against 5 ms)",
            calls,
            failed,
            None,
            None,
            None,
            "",
            {f"slow_share_{policy}": share for policy, share in shares.items()},
        )
    )
    assert failed == 0
    assert shares["round_robin"] > 0.3
    assert shares["least_request"] < MAX_SLOW_SHARE
    assert shares["ewma"] < MAX_SLOW_SHARE
