"""A replica's link goes down: its lease expires and clients route around it."""

from __future__ import annotations

import pytest

from tests.multihost.processes import (
    FAKE_MODULE,
    REFRESH_RETRY,
    REREGISTERED,
    SERVICE,
    SERVICE_PREFIX,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.multihost]


def test_cut_replica_leaves_discovery(
    network, etcd_cluster, replicas, start_load_client
):
    started = replicas.start(FAKE_MODULE, 3)
    cut_off, survivors = started[0], started[1:]
    everyone = {replica.instance_id for replica in started}
    load = start_load_client()
    load.wait_endpoints(everyone)
    load.wait_acks(100)

    network.cut(cut_off.host)
    remaining = {replica.instance_id for replica in survivors}
    wait_until(
        lambda: set(etcd_cluster.registrations(SERVICE_PREFIX, SERVICE)) == remaining,
        30,
        "the cut replica's lease expires",
    )
    load.wait_endpoints(remaining)
    served_at_removal = load.served(cut_off.instance_id)
    load.wait_acks(200)
    served_while_cut = load.served(cut_off.instance_id) - served_at_removal
    failed_attempts = load.status["attempt_failures"][cut_off.instance_id]

    network.heal(cut_off.host)
    wait_until(
        lambda: cut_off.log_count(REREGISTERED) >= 1,
        30,
        "the healed replica registers again",
    )
    load.wait_endpoints(everyone)
    load.wait_acks(100)
    report = load.stop()

    assert cut_off.running
    assert cut_off.log_count(REFRESH_RETRY) >= 1
    assert served_while_cut == 0
    # Calls sent to the cut replica failed there and were retried elsewhere.
    assert failed_attempts >= 1
    assert report["failed"] == 0, report["errors"]
    assert report["stopped_by"] == "request"
    assert report["served"][cut_off.instance_id] > served_at_removal
