"""Every method that a contract declares has an implementation, found by
importing the package that serves the service and looking for subclasses of
the generated servicer base, whose methods return UNIMPLEMENTED."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from tests.contracts.descriptors import (
    method_id,
    methods,
    service_packages,
    servicer_base,
    services,
)


def servicer_classes(service) -> list[type]:
    """Return the classes in the service's package that subclass its base."""
    base = servicer_base(service)
    package = importlib.import_module(service_packages()[service.full_name])
    found = []
    for module_info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        found += [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, base)
            and cls is not base
            and cls.__module__ == module.__name__
        ]
    return found


@pytest.mark.parametrize("service", services(), ids=lambda s: s.full_name)
def test_service_has_package_and_servicer(service):
    assert service.full_name in service_packages()
    assert servicer_classes(service), f"no subclass of {servicer_base(service)}"


@pytest.mark.parametrize("method", methods(), ids=method_id)
def test_servicer_implements_method(method):
    base = servicer_base(method.containing_service)

    for cls in servicer_classes(method.containing_service):
        implementation = getattr(cls, method.name)

        assert implementation is not getattr(base, method.name), (
            f"{cls.__qualname__} does not implement {method.name}; calls get "
            "UNIMPLEMENTED from the generated base class"
        )
        assert inspect.iscoroutinefunction(
            implementation
        ) or inspect.isasyncgenfunction(implementation), (
            f"{cls.__qualname__}.{method.name} is not async; grpc.aio servers need it"
        )
