"""A CounterService that keeps counts in memory, for registry tests.

It runs through the real MeshServer (health, reflection, registration,
drain), so registry tests do not depend on counter_svc's storage. Run it as
`python -m tests.integration.fake_service` with MESH_* in the environment.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc.aio

from protos import counter_pb2, counter_pb2_grpc
from registry.etcd import EtcdClient
from registry.serve import ServiceSpec, run_service

SERVICE = os.environ.get("FAKE_SERVICE_NAME", "mesh.counter.v1.CounterService")


class MemoryCounter(counter_pb2_grpc.CounterServiceServicer):
    def __init__(self, delay: float = 0.0) -> None:
        self.values: dict[str, int] = {}
        self.delay = delay
        self.request_ids: list[str] = []

    async def Increment(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        self.request_ids.append(request.request_id)
        if self.delay:
            await asyncio.sleep(self.delay)
        value = self.values.get(request.name, 0) + request.delta
        self.values[request.name] = value
        return counter_pb2.IncrementResponse(
            counter=counter_pb2.Counter(name=request.name, value=value)
        )

    async def GetCounter(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        value = self.values.get(request.name, 0)
        return counter_pb2.GetCounterResponse(
            counter=counter_pb2.Counter(name=request.name, value=value)
        )

    async def ListCounters(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        counters = [
            counter_pb2.Counter(name=name, value=value)
            for name, value in sorted(self.values.items())
        ]
        return counter_pb2.ListCountersResponse(counters=counters)

    async def WatchCounter(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        for step in range(3):
            yield counter_pb2.WatchCounterResponse(
                counter=counter_pb2.Counter(name=request.name, value=step),
                revision=step,
            )


def spec(servicer: MemoryCounter, name: str = SERVICE) -> ServiceSpec:
    return ServiceSpec(
        name,
        lambda server: counter_pb2_grpc.add_CounterServiceServicer_to_server(
            servicer, server
        ),
    )


def build(_etcd: EtcdClient) -> Sequence[ServiceSpec]:
    delay = float(os.environ.get("FAKE_SERVICE_DELAY", "0"))
    return [spec(MemoryCounter(delay))]


if __name__ == "__main__":
    sys.exit(run_service("fake_service", build))
