"""Method shapes that the ingress reads from backend reflection, and their cache."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from registry.ingress_descriptors import (
    FAILED_FETCH_TTL,
    SHAPES_TTL,
    MethodCatalog,
    Shape,
    method_shapes,
)

SERVICE = "test.shapes.v1.Shapes"


def shapes_file() -> bytes:
    file = descriptor_pb2.FileDescriptorProto(
        name="test/shapes/v1/shapes.proto", package="test.shapes.v1"
    )
    service = file.service.add(name="Shapes")
    for name, client_streaming, server_streaming in [
        ("Unary", False, False),
        ("Watch", False, True),
        ("Upload", True, False),
        ("Chat", True, True),
    ]:
        service.method.add(
            name=name,
            input_type=".test.shapes.v1.M",
            output_type=".test.shapes.v1.M",
            client_streaming=client_streaming,
            server_streaming=server_streaming,
        )
    return file.SerializeToString()


def found(*files: bytes) -> Any:
    return reflection_pb2.ServerReflectionResponse(
        file_descriptor_response=reflection_pb2.FileDescriptorResponse(
            file_descriptor_proto=list(files)
        )
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeReflection:
    responses: list[Any] = field(default_factory=list)
    requests: int = 0
    release: asyncio.Event | None = None

    async def ask(self, service, request):
        self.requests += 1
        if self.release is not None:
            await self.release.wait()
        response = self.responses[min(self.requests, len(self.responses)) - 1]
        if isinstance(response, Exception):
            raise response
        return response


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="connection refused",
        debug_error_string=None,
    )


def catalog(reflection: Any, clock: FakeClock | None = None) -> MethodCatalog:
    return MethodCatalog(reflection, clock=clock or FakeClock())


def test_method_shapes_cover_all_four():
    shapes = method_shapes([shapes_file()], SERVICE)

    assert shapes == {
        "Unary": Shape.UNARY_UNARY,
        "Watch": Shape.UNARY_STREAM,
        "Upload": Shape.STREAM_UNARY,
        "Chat": Shape.STREAM_STREAM,
    }


def test_method_shapes_of_absent_service_are_empty():
    assert method_shapes([shapes_file()], "test.shapes.v1.Other") == {}


async def test_shapes_are_fetched_once():
    reflection = FakeReflection([found(shapes_file())])
    shapes = catalog(reflection)

    first = await shapes.shape(SERVICE, "Watch")
    second = await shapes.shape(SERVICE, "Unary")

    assert first is Shape.UNARY_STREAM
    assert second is Shape.UNARY_UNARY
    assert reflection.requests == 1


async def test_stale_shapes_are_served_while_refetched():
    clock = FakeClock()
    reflection = FakeReflection([found(shapes_file())])
    shapes = catalog(reflection, clock)
    await shapes.shape(SERVICE, "Unary")

    clock.now += SHAPES_TTL + 1
    stale = await shapes.shape(SERVICE, "Unary")
    await asyncio.sleep(0)

    assert stale is Shape.UNARY_UNARY
    assert reflection.requests == 2


async def test_failed_fetch_gives_none_then_retries():
    clock = FakeClock()
    reflection = FakeReflection([unavailable(), found(shapes_file())])
    shapes = catalog(reflection, clock)

    failed = await shapes.shape(SERVICE, "Chat")
    clock.now += FAILED_FETCH_TTL + 1
    await shapes.shape(SERVICE, "Chat")
    await asyncio.sleep(0)
    retried = await shapes.shape(SERVICE, "Chat")

    assert failed is None
    assert retried is Shape.STREAM_STREAM
    assert reflection.requests == 2


async def test_slow_fetch_gives_none_without_waiting():
    release = asyncio.Event()
    reflection = FakeReflection([found(shapes_file())], release=release)
    shapes = catalog(reflection)

    early = await shapes.shape(SERVICE, "Unary", wait=0.01)
    release.set()
    await asyncio.sleep(0)
    later = await shapes.shape(SERVICE, "Unary", wait=1.0)

    assert early is None
    assert later is Shape.UNARY_UNARY
    assert reflection.requests == 1
