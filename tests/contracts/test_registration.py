"""The registration values of running services follow etcd's gRPC naming
JSON, which Go clients read with etcd's resolver: Metadata is a JSON string,
because an object makes Go's round_robin balancer panic."""

from __future__ import annotations

import json

import pytest

from tests.contracts.descriptors import services

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("service", services(), ids=lambda s: s.full_name)
def test_registration_metadata_is_json_string(live, service):
    prefix = live.config.service_prefix(service.full_name)

    kvs, _ = live.loop.run(live.mesh.etcd.get_prefix(prefix))

    assert kvs, f"no registration under {prefix}"
    for kv in kvs:
        record = json.loads(kv.value)
        assert record["Op"] == 0
        assert isinstance(record["Metadata"], str), kv.value
        assert json.loads(record["Metadata"])["id"] == kv.key.rsplit("/", 1)[-1]
