"""The one mapping from gRPC and registry errors to HTTP responses."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from front.errors import describe_validation_errors, from_mesh_error, from_rpc_error
from registry.errors import (
    EtcdRequestError,
    EtcdUnavailableError,
    NoEndpointError,
)


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 503),
        (grpc.StatusCode.INTERNAL, 502),
        (grpc.StatusCode.UNKNOWN, 502),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 502),
        (grpc.StatusCode.FAILED_PRECONDITION, 502),
    ],
)
def test_rpc_error_status(code, status):
    error = from_rpc_error(rpc_error(code, "details"))

    assert error.status == status
    assert error.code == code.name


def test_invalid_argument_keeps_message():
    error = from_rpc_error(
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "name: must not be empty")
    )

    assert error.message == "name: must not be empty"


def test_internal_error_hides_details():
    error = from_rpc_error(
        rpc_error(grpc.StatusCode.INTERNAL, "Traceback (most recent call last): ...")
    )

    assert "Traceback" not in error.message
    assert "INTERNAL" in error.message


def test_no_endpoint_is_503():
    error = from_mesh_error(NoEndpointError("mesh.counter.v1.CounterService", "/mesh"))

    assert error.status == 503
    assert error.code == "UNAVAILABLE"
    assert "mesh.counter.v1.CounterService" in error.message


def test_etcd_unavailable_is_503():
    error = from_mesh_error(EtcdUnavailableError(("http://127.0.0.1:2379",), "down"))

    assert error.status == 503
    assert "http://127.0.0.1:2379" in error.message


def test_other_mesh_error_is_502():
    error = from_mesh_error(EtcdRequestError("etcd rejected get"))

    assert error.status == 502


def test_validation_message_names_each_field():
    errors = [
        {"loc": ("body", "delta"), "msg": "Input should be a valid integer"},
        {"loc": ("query", "page_size"), "msg": "Input should be less than 1001"},
    ]

    message = describe_validation_errors(errors)

    assert message == (
        "invalid delta: Input should be a valid integer; "
        "invalid page_size: Input should be less than 1001"
    )
