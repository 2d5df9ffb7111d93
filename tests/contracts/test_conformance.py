"""Every method of every service, found from the descriptors, against real
processes through the mesh: reflection, default requests and the limits
that the contracts declare."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message_factory import GetMessageClass

from tests.contracts.boundaries import boundary_cases
from tests.contracts.descriptors import method_id, methods, services
from tests.contracts.live import FORBIDDEN_CODES, LiveMesh

pytestmark = pytest.mark.integration

GRPCURL = Path(sys.executable).parent / "grpcurl"
METHODS = methods()
CASES = [
    (method, case) for method in METHODS for case in boundary_cases(method.input_type)
]


def grpcurl(*args: str) -> str:
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def address_of(live: LiveMesh, service: str) -> str:
    endpoints = live.mesh.resolver(service).snapshot()
    assert endpoints, f"no endpoint of {service} in discovery"
    return next(iter(endpoints.values())).address


@pytest.mark.parametrize("service", services(), ids=lambda s: s.full_name)
def test_reflection_lists_every_service(live, service):
    listed = grpcurl(address_of(live, service.full_name), "list").split()

    assert service.full_name in listed


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_grpcurl_describes_method(live, method):
    service = method.containing_service.full_name

    described = grpcurl(
        address_of(live, service), "describe", f"{service}.{method.name}"
    )

    assert f"rpc {method.name} (" in described


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_default_request_is_answered(live, method):
    outcome = live.call(method, GetMessageClass(method.input_type)())

    assert outcome.code in {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}, (
        outcome.describe()
    )
    if outcome.code == grpc.StatusCode.INVALID_ARGUMENT:
        named = {
            violation.split(".")[0].split("[")[0] for violation in outcome.violations
        }
        assert named, f"INVALID_ARGUMENT names no field: {outcome.describe()}"
        assert named <= set(method.input_type.fields_by_name), outcome.describe()


def _case_id(item: tuple[Any, Any]) -> str:
    method, case = item
    return f"{method_id(method)}:{case.label}"


@pytest.mark.parametrize("item", CASES, ids=[_case_id(item) for item in CASES])
def test_boundary_case(live, item):
    method, case = item

    outcome = live.call(method, case.request)

    assert outcome.code not in FORBIDDEN_CODES, outcome.describe()
    if case.valid:
        assert outcome.code != grpc.StatusCode.INVALID_ARGUMENT, outcome.describe()
    else:
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.describe()
        assert outcome.violations == [case.field]
        assert outcome.details.startswith(f"{case.field}: ")
