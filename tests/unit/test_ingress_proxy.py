"""The ingress's forwarding handler: paths, metadata and raw bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from registry.ingress_directory import is_service_name
from registry.ingress_proxy import ProxyHandler, forwarded_metadata, split_method

REPO_ROOT = Path(__file__).resolve().parents[2]


class CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


def handler_for(path: str) -> Any:
    # service() reads only the path; router and catalog serve the call itself.
    proxy = ProxyHandler(router=None, catalog=None)  # type: ignore[arg-type]
    return proxy.service(CallDetails(path))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "/mesh.counter.v1.CounterService/Increment",
            ("mesh.counter.v1.CounterService", "Increment"),
        ),
        ("/Svc/M", ("Svc", "M")),
        ("mesh.counter.v1.CounterService/Increment", None),
        ("/mesh.counter.v1.CounterService", None),
        ("/mesh.counter.v1.CounterService/", None),
        ("//Increment", None),
        ("/a/b/c", None),
    ],
)
def test_split_method(path, expected):
    assert split_method(path) == expected


def test_forwarded_metadata_drops_reserved_keys():
    incoming = [
        (":authority", "localhost:50051"),
        ("grpc-timeout", "1S"),
        ("grpc-accept-encoding", "gzip"),
        ("content-type", "application/grpc"),
        ("user-agent", "grpcurl/1.8.6"),
        ("te", "trailers"),
        ("x-test", "1"),
        ("authorization", "Bearer t"),
        ("trace-bin", b"\x00\x01"),
    ]

    forwarded = forwarded_metadata(incoming)

    assert forwarded == (
        ("x-test", "1"),
        ("authorization", "Bearer t"),
        ("trace-bin", b"\x00\x01"),
    )


def test_handler_passes_bytes_through():
    handler = handler_for("/mesh.counter.v1.CounterService/Increment")

    assert handler is not None
    assert handler.request_streaming
    assert handler.response_streaming
    assert handler.stream_stream is not None
    # None means identity: the handler gets and returns the raw bytes.
    assert handler.request_deserializer is None
    assert handler.response_serializer is None


@pytest.mark.parametrize(
    "path",
    [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/no-method",
    ],
)
def test_handler_leaves_local_and_invalid_paths(path):
    assert handler_for(path) is None


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("mesh.counter.v1.CounterService", True),
        ("Svc", True),
        ("_private.Svc2", True),
        ("", False),
        ("mesh..Svc", False),
        ("mesh.Svc/x", False),
        ("1mesh.Svc", False),
        ("mesh.Svc.", False),
    ],
)
def test_is_service_name(name, valid):
    assert is_service_name(name) is valid


def test_ingress_imports_no_message_classes():
    script = (
        "import sys, registry.ingress; "
        "loaded = [m for m in sys.modules if m == 'protos' or m.startswith('mesh.')]; "
        "print(loaded)"
    )

    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    assert result.stdout.strip() == "[]"
