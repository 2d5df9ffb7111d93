"""Discovery across hosts: every replica advertises its own namespace address."""

from __future__ import annotations

import pytest

from tests.multihost.netns import SUBNET, ip
from tests.multihost.processes import (
    COUNTER_MODULE,
    SERVICE,
    SERVICE_PREFIX,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.multihost]


def test_replicas_advertise_own_addresses(etcd_cluster, replicas, start_load_client):
    started = replicas.start(COUNTER_MODULE, 3)
    expected = {replica.instance_id: replica.host.address for replica in started}

    def all_registered() -> bool:
        return set(etcd_cluster.registrations(SERVICE_PREFIX, SERVICE)) == set(expected)

    wait_until(all_registered, 30, "every replica is registered")
    registered = etcd_cluster.registrations(SERVICE_PREFIX, SERVICE)
    load = start_load_client("--max-calls", "300")
    report = load.wait_done()

    # The root namespace has no address and no route on the test subnet.
    assert f"{SUBNET}." not in ip("-4", "address", "show")
    assert f"{SUBNET}." not in ip("-4", "route", "show")
    for instance_id, address in expected.items():
        assert registered[instance_id].address.rsplit(":", 1)[0] == address
    assert report["stopped_by"] == "max-calls"
    assert report["failed"] == 0, report["errors"]
    assert report["acked"] == 300
    assert set(report["served"]) == set(expected)
    assert report["endpoints"] == {
        instance_id: endpoint.address for instance_id, endpoint in registered.items()
    }
