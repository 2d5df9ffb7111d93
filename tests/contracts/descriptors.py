"""Services, methods and their code, found from the compiled contracts.

Nothing here lists a service or a method by hand: every contract module that
the `protos` facade exports is read through its DESCRIPTOR, so a method added
to a .proto file shows up in every test that uses these functions.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

import protos

REPO_ROOT = Path(__file__).resolve().parents[2]


def contract_modules() -> list[ModuleType]:
    """Return the *_pb2 modules that the protos facade exports."""
    return [getattr(protos, name) for name in protos.__all__ if name.endswith("_pb2")]


def services() -> list[ServiceDescriptor]:
    """Return every service that the contracts declare."""
    return [
        service
        for module in contract_modules()
        for service in module.DESCRIPTOR.services_by_name.values()
    ]


def methods() -> list[MethodDescriptor]:
    """Return every method of every service."""
    return [method for service in services() for method in service.methods]


def method_id(method: MethodDescriptor) -> str:
    """Return the test id of a method: the gRPC path without its leading slash."""
    return f"{method.containing_service.full_name}/{method.name}"


def grpc_module(service: ServiceDescriptor) -> ModuleType:
    """Return the generated *_pb2_grpc module of a service, from the facade."""
    for module in contract_modules():
        if module.DESCRIPTOR.services_by_name.get(service.name) is service:
            grpc: ModuleType = getattr(
                protos, module.__name__.rsplit(".", 1)[-1] + "_grpc"
            )
            return grpc
    raise LookupError(f"no contract module declares {service.full_name}")


def stub_class(service: ServiceDescriptor) -> Any:
    """Return the generated stub class of a service, found by its name."""
    return getattr(grpc_module(service), f"{service.name}Stub")


def servicer_base(service: ServiceDescriptor) -> type:
    """Return the generated servicer base class, whose methods are UNIMPLEMENTED."""
    base: type = getattr(grpc_module(service), f"{service.name}Servicer")
    return base


def service_packages() -> dict[str, str]:
    """Return service name -> the package that serves it with `python -m`.

    A service package is a top-level folder with __main__.py whose __init__.py
    assigns SERVICE_NAME, as counter_svc and user_svc do.
    """
    found: dict[str, str] = {}
    for init in sorted(REPO_ROOT.glob("*/__init__.py")):
        if not (init.parent / "__main__.py").exists():
            continue
        for node in ast.parse(init.read_text(encoding="utf-8")).body:
            if (
                isinstance(node, ast.Assign)
                and any(
                    isinstance(target, ast.Name) and target.id == "SERVICE_NAME"
                    for target in node.targets
                )
                and isinstance(node.value, ast.Constant)
            ):
                found[str(node.value.value)] = init.parent.name
    return found
