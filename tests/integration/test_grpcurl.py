"""The real grpcurl binary against real counter_svc and user_svc processes.

Addresses come from the registrations in etcd, never from a fixed port.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from counter_svc import SERVICE_NAME as COUNTER_SERVICE
from registry.model import INSTANCE_METADATA_KEY, decode_record
from tests.integration.service_process import REPO_ROOT, ServiceProcesses
from user_svc import SERVICE_NAME as USER_SERVICE

pytestmark = pytest.mark.integration

GRPCURL = REPO_ROOT / ".venv" / "bin" / "grpcurl"


@pytest.fixture
async def addresses(etcd, mesh_config, tmp_path) -> AsyncIterator[dict[str, str]]:
    """Start one process of each service; return service name -> address."""
    processes = ServiceProcesses(mesh_config, tmp_path)
    try:
        await asyncio.gather(
            processes.start(etcd, "counter_svc", COUNTER_SERVICE),
            processes.start(etcd, "user_svc", USER_SERVICE),
        )
        found = {}
        for service in (COUNTER_SERVICE, USER_SERVICE):
            kvs, _ = await etcd.get_prefix(mesh_config.service_prefix(service))
            assert len(kvs) == 1
            found[service] = decode_record(service, kvs[0].key, kvs[0].value).address
        yield found
    finally:
        processes.stop_all()


def grpcurl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert Path(GRPCURL).exists(), f"grpcurl is missing at {GRPCURL}"
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("service", [COUNTER_SERVICE, USER_SERVICE])
def test_list_shows_service_health_and_reflection(addresses, service):
    listed = grpcurl(addresses[service], "list").stdout.split()

    assert service in listed
    assert "grpc.health.v1.Health" in listed
    assert "grpc.reflection.v1alpha.ServerReflection" in listed


@pytest.mark.parametrize(
    ("service", "methods"),
    [
        (COUNTER_SERVICE, ["Increment", "GetCounter", "ListCounters", "WatchCounter"]),
        (
            USER_SERVICE,
            [
                "CreateUser",
                "GetUser",
                "ListUsers",
                "Login",
                "ValidateSession",
                "Logout",
            ],
        ),
    ],
)
def test_describe_shows_every_method(addresses, service, methods):
    described = grpcurl(addresses[service], "describe", service).stdout

    assert f"{service} is a service" in described
    for method in methods:
        assert f"rpc {method} (" in described


def test_increment_with_json_request(addresses):
    address = addresses[COUNTER_SERVICE]
    request = json.dumps({"name": "x", "delta": 2})

    first = grpcurl("-d", request, address, f"{COUNTER_SERVICE}/Increment")
    second = grpcurl("-d", request, address, f"{COUNTER_SERVICE}/Increment")

    # The JSON mapping of protobuf writes int64 values as strings.
    assert json.loads(first.stdout) == {"counter": {"name": "x", "value": "2"}}
    assert json.loads(second.stdout) == {"counter": {"name": "x", "value": "4"}}


def test_verbose_output_names_instance(addresses):
    address = addresses[COUNTER_SERVICE]
    request = json.dumps({"name": "x"})

    verbose = grpcurl("-v", "-d", request, address, f"{COUNTER_SERVICE}/GetCounter")

    assert f"{INSTANCE_METADATA_KEY}: " in verbose.stdout


@pytest.mark.parametrize("service", [COUNTER_SERVICE, USER_SERVICE])
def test_health_check_is_serving(addresses, service):
    request = json.dumps({"service": service})

    checked = grpcurl("-d", request, addresses[service], "grpc.health.v1.Health/Check")

    assert json.loads(checked.stdout) == {"status": "SERVING"}


def test_invalid_argument_through_grpcurl(addresses):
    request = json.dumps({"name": "bad/name", "delta": 1})

    failed = grpcurl(
        "-d",
        request,
        addresses[COUNTER_SERVICE],
        f"{COUNTER_SERVICE}/Increment",
        check=False,
    )

    assert failed.returncode != 0
    assert "InvalidArgument" in failed.stderr
    assert "name: must be 1 to 64 characters" in failed.stderr


def test_create_user_and_login(addresses):
    address = addresses[USER_SERVICE]
    user = {"username": "zoe", "password": "long enough", "display_name": "Zoe"}

    grpcurl("-d", json.dumps(user), address, f"{USER_SERVICE}/CreateUser")
    login = grpcurl(
        "-d",
        json.dumps({"username": "zoe", "password": "long enough"}),
        address,
        f"{USER_SERVICE}/Login",
    )

    body = json.loads(login.stdout)
    assert body["user"]["username"] == "zoe"
    assert len(body["session_token"]) == 43
