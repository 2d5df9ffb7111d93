"""A descriptor pool for server reflection that also finds methods by name.

grpcio-reflection (checked with 1.85) serves a file_containing_symbol request
by calling DescriptorPool.FindFileContainingSymbol. With protobuf's upb backend
(checked with protobuf 7.36) that call finds services, messages and fields but
raises KeyError for a method, such as "mesh.counter.v1.CounterService.Increment",
so `grpcurl describe <service>.<method>` failed with "Symbol not found".
ReflectionPool falls back to the file of the method's service.
"""

from __future__ import annotations

from typing import Any, cast

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor


class ReflectionPool:
    """The default descriptor pool, plus lookups of methods by full name."""

    def __init__(self, pool: descriptor_pool.DescriptorPool | None = None) -> None:
        self._pool = pool if pool is not None else descriptor_pool.Default()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        """Return the file that declares symbol, methods included."""
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                service = None
            if service is None or method not in service.methods_by_name:
                raise
            return service.file


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """Return a ReflectionPool typed as the pool that grpcio-reflection takes.

    The reflection servicer only calls lookup methods, which ReflectionPool
    forwards, so the duck-typed wrapper works where a DescriptorPool is typed.
    """
    return cast("descriptor_pool.DescriptorPool", ReflectionPool())
