"""The CounterService gRPC servicer: validates requests, calls the store."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from counter_svc import validation
from counter_svc.errors import grpc_errors
from counter_svc.storage import CounterStore, CounterValue
from counter_svc.watch import watch_counter
from protos import counter_pb2, counter_pb2_grpc
from registry.etcd import EtcdClient

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


class CounterServicer(counter_pb2_grpc.CounterServiceServicer):
    """CounterService backed by etcd, where every replica uses the same keys."""

    def __init__(self, etcd: EtcdClient, namespace: str) -> None:
        self.store = CounterStore(etcd, namespace)

    async def Increment(
        self, request: counter_pb2.IncrementRequest, context: Context
    ) -> counter_pb2.IncrementResponse:
        async with grpc_errors(context, "Increment"):
            name = validation.validate_name(request.name)
            delta = validation.validate_delta(request.delta)
            request_id = validation.validate_request_id(request.request_id)
            counter = await self.store.increment(name, delta, request_id)
            return counter_pb2.IncrementResponse(counter=_to_message(counter))

    async def GetCounter(
        self, request: counter_pb2.GetCounterRequest, context: Context
    ) -> counter_pb2.GetCounterResponse:
        async with grpc_errors(context, "GetCounter"):
            name = validation.validate_name(request.name)
            counter = await self.store.get(name)
            return counter_pb2.GetCounterResponse(counter=_to_message(counter))

    async def ListCounters(
        self, request: counter_pb2.ListCountersRequest, context: Context
    ) -> counter_pb2.ListCountersResponse:
        async with grpc_errors(context, "ListCounters"):
            page_size = validation.validate_page_size(request.page_size)
            after = validation.decode_page_token(request.page_token)
            counters, more = await self.store.list_page(after, page_size)
            next_token = ""
            if more and counters:
                next_token = validation.encode_page_token(counters[-1].name)
            return counter_pb2.ListCountersResponse(
                counters=[_to_message(counter) for counter in counters],
                next_page_token=next_token,
            )

    async def WatchCounter(
        self, request: counter_pb2.WatchCounterRequest, context: Context
    ) -> AsyncIterator[counter_pb2.WatchCounterResponse]:
        async with grpc_errors(context, "WatchCounter"):
            name = validation.validate_name(request.name)
            logger.info("watch started name=%s peer=%s", name, context.peer())
            try:
                values = watch_counter(self.store, name)
                async with contextlib.aclosing(values):
                    async for counter in values:
                        yield counter_pb2.WatchCounterResponse(
                            counter=_to_message(counter), revision=counter.revision
                        )
            finally:
                logger.info("watch ended name=%s peer=%s", name, context.peer())


def _to_message(counter: CounterValue) -> counter_pb2.Counter:
    return counter_pb2.Counter(name=counter.name, value=counter.value)
