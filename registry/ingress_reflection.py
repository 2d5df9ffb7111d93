"""Server reflection at the ingress for every service in the mesh.

The ingress builds the `list_services` response itself, from the
registrations in etcd plus the services it serves itself (health and both
reflection versions). It resolves requests about its own services in a
private descriptor pool, and forwards every other request to a live replica
of the service that most likely owns the symbol or file, trying the others
in turn.

Both reflection versions are served. `grpc.reflection.v1` and
`grpc.reflection.v1alpha` define the same messages with the same field
numbers, so their encodings are identical, and the v1 method is served with
the v1alpha message classes (grpcio-reflection 1.85 ships no v1 classes).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeAlias

import grpc
import grpc.aio
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from registry.errors import MeshError
from registry.ingress_descriptors import BackendReflection
from registry.ingress_directory import ServiceDirectory

logger = logging.getLogger(__name__)

HEALTH_SERVICE = "grpc.health.v1.Health"
V1ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
LOCAL_SERVICES = frozenset({HEALTH_SERVICE, V1ALPHA_SERVICE, V1_SERVICE})
V1_FILE = "grpc/reflection/v1/reflection.proto"

# grpcio-reflection ships no type hints, so its messages are typed as Any.
Request: TypeAlias = Any
Response: TypeAlias = Any


def v1_file() -> descriptor_pb2.FileDescriptorProto:
    """Derive the v1 reflection file from the v1alpha one.

    Only the package, the file name and the type references change, so
    that `describe grpc.reflection.v1.ServerReflection` works too.
    """
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    file.name = V1_FILE
    file.package = "grpc.reflection.v1"
    file.ClearField("options")
    for message in file.message_type:
        for field in message.field:
            # Assigning even an empty string would mark the field as set.
            if field.type_name:
                field.type_name = field.type_name.replace(old, new)
    for method in file.service[0].method:
        method.input_type = method.input_type.replace(old, new)
        method.output_type = method.output_type.replace(old, new)
    return file


def local_pool() -> descriptor_pool.DescriptorPool:
    """Return a pool with the files of the services the ingress serves."""
    pool = descriptor_pool.DescriptorPool()
    for module_descriptor in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        file = descriptor_pb2.FileDescriptorProto()
        module_descriptor.CopyToProto(file)
        pool.Add(file)
    pool.Add(v1_file())
    return pool


def closeness(name: str, service: str) -> int:
    """Count the leading dotted parts that name and service share."""
    shared = 0
    for left, right in zip(name.split("."), service.split("."), strict=False):
        if left != right:
            break
        shared += 1
    return shared


def by_closeness(name: str, services: Sequence[str]) -> list[str]:
    """Order services so that the likely owner of a symbol comes first."""
    return sorted(services, key=lambda service: (-closeness(name, service), service))


def error_response(request: Request, code: grpc.StatusCode, message: str) -> Response:
    return reflection_pb2.ServerReflectionResponse(
        valid_host=request.host,
        original_request=request,
        error_response=reflection_pb2.ErrorResponse(
            error_code=code.value[0], error_message=message
        ),
    )


class ReflectionProxy:
    """The ServerReflectionInfo method of the ingress, for both versions."""

    def __init__(
        self, directory: ServiceDirectory, backends: BackendReflection
    ) -> None:
        self._directory = directory
        self._backends = backends
        self._pool = local_pool()

    def handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        """Return the handlers of the v1alpha and the v1 reflection service."""
        request_class = reflection_pb2.ServerReflectionRequest
        response_class = reflection_pb2.ServerReflectionResponse
        method = grpc.stream_stream_rpc_method_handler(
            self.info,
            request_deserializer=request_class.FromString,
            response_serializer=response_class.SerializeToString,
        )
        return [
            grpc.method_handlers_generic_handler(
                service, {"ServerReflectionInfo": method}
            )
            for service in (V1ALPHA_SERVICE, V1_SERVICE)
        ]

    async def info(
        self,
        requests: AsyncIterator[Request],
        _context: grpc.aio.ServicerContext[Request, Response],
    ) -> AsyncIterator[Response]:
        async for request in requests:
            yield await self.answer(request)

    async def answer(self, request: Request) -> Response:
        """Return the response to one reflection request."""
        kind = request.WhichOneof("message_request")
        if kind == "list_services":
            return await self._list_services(request)
        if kind == "file_by_filename":
            return await self._file_by_filename(request, request.file_by_filename)
        if kind == "file_containing_symbol":
            return await self._by_symbol(request, request.file_containing_symbol)
        if kind == "file_containing_extension":
            extension = request.file_containing_extension
            return await self._by_symbol(request, extension.containing_type)
        if kind == "all_extension_numbers_of_type":
            return await self._by_symbol(request, request.all_extension_numbers_of_type)
        return error_response(
            request,
            grpc.StatusCode.INVALID_ARGUMENT,
            "message_request: missing; set list_services, file_by_filename, "
            "file_containing_symbol, file_containing_extension or "
            "all_extension_numbers_of_type",
        )

    async def _services(self) -> tuple[str, ...]:
        try:
            return await self._directory.refresh()
        except MeshError as exc:
            logger.warning("listing services failed: %s; returning the last list", exc)
            return self._directory.listed

    async def _list_services(self, request: Request) -> Response:
        names = sorted({*await self._services(), *LOCAL_SERVICES})
        return reflection_pb2.ServerReflectionResponse(
            valid_host=request.host,
            original_request=request,
            list_services_response=reflection_pb2.ListServiceResponse(
                service=[reflection_pb2.ServiceResponse(name=name) for name in names]
            ),
        )

    async def _file_by_filename(self, request: Request, filename: str) -> Response:
        try:
            local = self._pool.FindFileByName(filename)
        except KeyError:
            pass
        else:
            return self._local_response(request, local)
        # `mesh/counter/v1/counter.proto` is compared as mesh.counter.v1.counter.
        services = by_closeness(filename.replace("/", "."), await self._services())
        owner = self._backends.owner_of(filename)
        if owner is not None:
            services = [owner, *(service for service in services if service != owner)]
        return await self._forward(request, services, f"file {filename!r}")

    async def _by_symbol(self, request: Request, symbol: str) -> Response:
        try:
            local = self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            pass
        else:
            if request.WhichOneof("message_request") == "file_containing_symbol":
                return self._local_response(request, local)
        services = by_closeness(symbol, await self._services())
        return await self._forward(request, services, f"symbol {symbol!r}")

    async def _forward(
        self, request: Request, services: Sequence[str], subject: str
    ) -> Response:
        response = await self._backends.first_found(services, request)
        if response is None:
            return error_response(
                request,
                grpc.StatusCode.NOT_FOUND,
                f"{subject} not found in any service of namespace "
                f"{self._directory.namespace!r}",
            )
        answer = reflection_pb2.ServerReflectionResponse()
        answer.CopyFrom(response)
        answer.valid_host = request.host
        answer.original_request.CopyFrom(request)
        return answer

    def _local_response(
        self, request: Request, file: descriptor.FileDescriptor
    ) -> Response:
        # The local files import no other file, so one file is the whole response.
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        return reflection_pb2.ServerReflectionResponse(
            valid_host=request.host,
            original_request=request,
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=[proto.SerializeToString()]
            ),
        )
