"""The caller policy: who may call which service and method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.authz import Policy
from registry.errors import ConfigError

GET = "/mesh.counter.v1.CounterService/Get"
HEALTH = "/grpc.health.v1.Health/Check"


def test_default_policy_front_calls_everything():
    policy = Policy.from_env({})

    assert policy.allows("front", GET)
    assert policy.allows("ingress", GET)
    assert policy.allows("meshctl", GET)


def test_default_policy_service_calls_nothing():
    policy = Policy.from_env({})

    assert not policy.allows("user-svc", GET)
    assert not policy.allows(None, GET)


def test_health_open_to_everyone():
    policy = Policy.from_env({})

    assert policy.allows("user-svc", HEALTH)
    assert policy.allows(
        None, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    )


def test_policy_file_service_and_method(tmp_path: Path):
    path = tmp_path / "policy.json"
    rules = {
        "user-svc": ["mesh.counter.v1.CounterService/Get"],
        "counter-svc": ["mesh.user.v1.UserService"],
    }
    path.write_text(json.dumps(rules))
    policy = Policy.from_env({"MESH_POLICY_FILE": str(path)})

    assert policy.allows("user-svc", GET)
    assert not policy.allows("user-svc", "/mesh.counter.v1.CounterService/Increment")
    assert policy.allows("counter-svc", "/mesh.user.v1.UserService/GetUser")
    assert not policy.allows("front", GET)


@pytest.mark.parametrize("content", ["[]", '{"front": "*"}', "not json"])
def test_invalid_policy_file_rejected(tmp_path: Path, content: str):
    path = tmp_path / "policy.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        Policy.from_env({"MESH_POLICY_FILE": str(path)})

    assert caught.value.setting == "MESH_POLICY_FILE"
