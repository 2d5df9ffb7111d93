"""Reflection at the ingress: local files, the derived v1 file and routing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from registry.errors import EtcdUnavailableError
from registry.ingress_reflection import (
    LOCAL_SERVICES,
    V1_FILE,
    ReflectionProxy,
    by_closeness,
    local_pool,
    v1_file,
)

COUNTER = "mesh.counter.v1.CounterService"
USER = "mesh.user.v1.UserService"


@dataclass
class FakeDirectory:
    listed: tuple[str, ...] = (COUNTER, USER)
    namespace: str = "/mesh"
    fail: bool = False

    async def refresh(self) -> tuple[str, ...]:
        if self.fail:
            raise EtcdUnavailableError(("http://127.0.0.1:2379",), "list failed")
        return self.listed


@dataclass
class FakeBackends:
    """Returns a file for one service and records which services were requested."""

    answering: str | None = None
    owners: dict[str, str] = field(default_factory=dict)
    requested: list[list[str]] = field(default_factory=list)

    def owner_of(self, filename: str) -> str | None:
        return self.owners.get(filename)

    async def first_found(self, services, request):
        self.requested.append(list(services))
        if self.answering is None or self.answering not in services:
            return None
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=[b"from " + self.answering.encode()]
            )
        )


def proxy(directory: Any = None, backends: Any = None) -> ReflectionProxy:
    directory = directory or FakeDirectory()
    backends = backends or FakeBackends()
    return ReflectionProxy(directory, backends)


def test_v1_file_renames_package_and_type_references():
    file = v1_file()

    assert file.name == V1_FILE
    assert file.package == "grpc.reflection.v1"
    method = file.service[0].method[0]
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert method.output_type == ".grpc.reflection.v1.ServerReflectionResponse"
    assert "v1alpha" not in str(file)


def test_local_pool_holds_both_reflection_versions_and_health():
    pool = local_pool()

    for service in LOCAL_SERVICES:
        assert pool.FindServiceByName(service).full_name == service


def test_by_closeness_puts_owner_first():
    services = [USER, "mesh.counter.v2.CounterService", COUNTER]

    ordered = by_closeness("mesh.counter.v1.CounterService.Increment", services)

    assert ordered == [COUNTER, "mesh.counter.v2.CounterService", USER]


async def test_list_services_adds_local_services():
    response = await proxy().answer(
        reflection_pb2.ServerReflectionRequest(host="h", list_services="*")
    )

    names = [service.name for service in response.list_services_response.service]
    assert names == sorted({COUNTER, USER, *LOCAL_SERVICES})
    assert response.valid_host == "h"
    assert response.original_request.list_services == "*"


async def test_list_services_keeps_last_list_when_etcd_fails():
    directory = FakeDirectory(fail=True, listed=(COUNTER,))

    response = await proxy(directory).answer(
        reflection_pb2.ServerReflectionRequest(list_services="")
    )

    names = {service.name for service in response.list_services_response.service}
    assert names == {COUNTER, *LOCAL_SERVICES}


async def test_local_symbol_is_answered_without_backends():
    backends = FakeBackends()

    response = await proxy(backends=backends).answer(
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"
        )
    )

    [raw] = response.file_descriptor_response.file_descriptor_proto
    assert descriptor_pb2.FileDescriptorProto.FromString(raw).name == V1_FILE
    assert backends.requested == []


async def test_symbol_is_forwarded_to_closest_service_first():
    backends = FakeBackends(answering=COUNTER)
    request = reflection_pb2.ServerReflectionRequest(
        host="h", file_containing_symbol="mesh.counter.v1.IncrementRequest"
    )

    response = await proxy(backends=backends).answer(request)

    assert backends.requested == [[COUNTER, USER]]
    assert list(response.file_descriptor_response.file_descriptor_proto) == [
        b"from " + COUNTER.encode()
    ]
    assert response.original_request == request
    assert response.valid_host == "h"


async def test_filename_goes_to_the_service_that_returned_it():
    backends = FakeBackends(
        answering=USER, owners={"google/protobuf/timestamp.proto": USER}
    )

    await proxy(backends=backends).answer(
        reflection_pb2.ServerReflectionRequest(
            file_by_filename="google/protobuf/timestamp.proto"
        )
    )

    assert backends.requested[0][0] == USER


async def test_unknown_symbol_is_not_found():
    response = await proxy().answer(
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.Such")
    )

    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "'no.Such'" in response.error_response.error_message
    assert "'/mesh'" in response.error_response.error_message


async def test_request_without_message_is_invalid():
    response = await proxy().answer(reflection_pb2.ServerReflectionRequest(host="h"))

    code = response.error_response.error_code
    assert code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "message_request" in response.error_response.error_message
