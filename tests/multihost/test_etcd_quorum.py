"""etcd members stop under load.

One stopped member, or each member in turn, fails no call and keeps every
lease. Two stopped members (no quorum) make registrations wait until the
members return.

The replicas are in-memory CounterService processes (tests.integration.
fake_service), so calls do not depend on etcd writes: every failed call in
the load client would come from discovery or routing.
"""

from __future__ import annotations

import functools
import time

import pytest

from tests.multihost.processes import (
    FAKE_MODULE,
    LEASE_TTL,
    REFRESH_RETRY,
    REREGISTERED,
    SERVICE,
    SERVICE_PREFIX,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.multihost]

# What registry.discovery logs when its watch stream breaks.
WATCH_BROKE = "broke: UNAVAILABLE"
# What asyncio logs when a task is garbage-collected before it finished.
PENDING_TASK = "Task was destroyed but it is pending"


def leases(cluster, member=None) -> dict[str, int]:
    registered = cluster.registrations(SERVICE_PREFIX, SERVICE, member=member)
    return {instance_id: endpoint.lease for instance_id, endpoint in registered.items()}


def test_one_member_down_fails_no_call(etcd_cluster, replicas, start_load_client):
    started = replicas.start(FAKE_MODULE, 3)
    everyone = {replica.instance_id for replica in started}
    wait_until(lambda: set(leases(etcd_cluster)) == everyone, 30, "all are registered")
    leases_before = leases(etcd_cluster)
    load = start_load_client()
    load.wait_endpoints(everyone)
    load.wait_acks(100)

    stopped = etcd_cluster.leader()
    stopped.stop()
    # Keep the member down for two lease TTLs, so that every lease must have
    # been refreshed through the other members to still exist.
    time.sleep(2 * LEASE_TTL)
    load.wait_acks(100)
    newcomer = replicas.start(FAKE_MODULE)[0]
    everyone.add(newcomer.instance_id)
    wait_until(
        lambda: set(leases(etcd_cluster)) == everyone, 30, "the newcomer registers"
    )
    load.wait_endpoints(everyone)
    load.wait_acks(100)
    leases_during = leases(etcd_cluster)
    stopped.start()
    wait_until(etcd_cluster.healthy, 30, "the member rejoins")
    load.wait_acks(100)
    report = load.stop()

    assert report["failed"] == 0, report["errors"]
    assert report["stopped_by"] == "request"
    assert set(report["served"]) == everyone
    for instance_id, lease in leases_before.items():
        assert leases_during[instance_id] == lease
    assert [replica.log_count(REREGISTERED) for replica in started] == [0, 0, 0]


def test_no_quorum_delays_registration(etcd_cluster, replicas, start_load_client):
    started = replicas.start(FAKE_MODULE, 3)
    everyone = {replica.instance_id for replica in started}
    wait_until(lambda: set(leases(etcd_cluster)) == everyone, 30, "all are registered")
    load = start_load_client()
    load.wait_endpoints(everyone)
    load.wait_acks(100)

    leader = etcd_cluster.leader()
    follower = next(member for member in etcd_cluster.members if member is not leader)
    stopped = [leader, follower]
    survivor = next(member for member in etcd_cluster.members if member not in stopped)
    for member in stopped:
        member.stop()
    newcomer = replicas.start(FAKE_MODULE)[0]
    wait_until(
        lambda: newcomer.registration_retries() >= 1,
        60,
        "the newcomer's registration fails",
    )
    wait_until(
        lambda: all(replica.log_count(REFRESH_RETRY) >= 2 for replica in started),
        60,
        "every replica's keepalive fails twice",
    )
    load.wait_acks(300)
    seen_by_survivor = set(leases(etcd_cluster, member=survivor))
    discovered_during = set(load.endpoints())
    quorum_during = etcd_cluster.healthy()

    for member in stopped:
        member.start()
    wait_until(etcd_cluster.healthy, 30, "the cluster has a quorum again")
    everyone.add(newcomer.instance_id)
    wait_until(lambda: set(leases(etcd_cluster)) == everyone, 30, "all are registered")
    load.wait_endpoints(everyone)
    # Two TTLs later every key is still there, so every keepalive works again.
    time.sleep(2 * LEASE_TTL)
    registered_after = set(leases(etcd_cluster))
    load.wait_acks(100)
    report = load.stop()

    assert not quorum_during
    assert seen_by_survivor == everyone - {newcomer.instance_id}
    assert discovered_during == everyone - {newcomer.instance_id}
    assert report["failed"] == 0, report["errors"]
    assert report["stopped_by"] == "request"
    assert report["served"][newcomer.instance_id] > 0
    assert registered_after == everyone


def test_rolling_restart_keeps_leases(etcd_cluster, replicas, start_load_client):
    started = replicas.start(FAKE_MODULE, 3)
    everyone = {replica.instance_id for replica in started}
    wait_until(lambda: set(leases(etcd_cluster)) == everyone, 30, "all are registered")
    leases_before = leases(etcd_cluster)
    load = start_load_client()
    load.wait_endpoints(everyone)
    load.wait_acks(100)

    for member in etcd_cluster.members:
        member.stop()
        load.wait_acks(100)
        member.start()
        wait_until(
            functools.partial(etcd_cluster.healthy, member),
            30,
            f"{member.host.name} answers again",
        )
    load.wait_acks(100)
    report = load.stop()

    assert report["failed"] == 0, report["errors"]
    assert report["stopped_by"] == "request"
    assert leases(etcd_cluster) == leases_before
    # Every member stopped once, so the client's watch broke at least once.
    assert load.log_count(WATCH_BROKE) >= 1
    assert report["leftover_tasks"] == []
    assert load.log_count(PENDING_TASK) == 0
