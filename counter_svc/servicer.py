"""The CounterService gRPC servicer: validates requests, calls the store.

Increments are coalesced by default (counter_svc.coalesce): the queued
increments of one counter share one etcd transaction. MESH_COUNTER_COALESCE=0
sends one transaction per request instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

from counter_svc import validation
from counter_svc.coalesce import IncrementBatcher
from counter_svc.errors import grpc_errors
from counter_svc.storage import CounterStore, CounterValue
from counter_svc.watch import watch_counter
from protos import counter_pb2, counter_pb2_grpc
from registry.errors import ConfigError
from registry.etcd import EtcdClient

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Increment = Callable[[str, int, str], Awaitable[CounterValue]]

COALESCE_VARIABLE = "MESH_COUNTER_COALESCE"
_SWITCH_VALUES = {
    "1": True,
    "true": True,
    "on": True,
    "0": False,
    "false": False,
    "off": False,
}


def coalesce_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Read MESH_COUNTER_COALESCE: 1/true/on (the default) or 0/false/off."""
    env = os.environ if environ is None else environ
    raw = env.get(COALESCE_VARIABLE, "1")
    try:
        return _SWITCH_VALUES[raw.strip().lower()]
    except KeyError:
        raise ConfigError(
            COALESCE_VARIABLE, f"invalid value {raw!r}; use 1 to coalesce or 0 not to"
        ) from None


class CounterServicer(counter_pb2_grpc.CounterServiceServicer):
    """CounterService backed by etcd, where every replica uses the same keys."""

    def __init__(
        self, etcd: EtcdClient, namespace: str, *, coalesce: bool | None = None
    ) -> None:
        self.store = CounterStore(etcd, namespace)
        self.batcher: IncrementBatcher | None = None
        self._increment: Increment = self.store.increment
        if coalesce_from_env() if coalesce is None else coalesce:
            self.batcher = IncrementBatcher(self.store)
            self._increment = self.batcher.increment

    async def Increment(
        self, request: counter_pb2.IncrementRequest, context: Context
    ) -> counter_pb2.IncrementResponse:
        async with grpc_errors(context, "Increment"):
            validation.check_request(request)
            counter = await self._increment(
                request.name, request.delta, request.request_id
            )
            return counter_pb2.IncrementResponse(counter=_to_message(counter))

    async def GetCounter(
        self, request: counter_pb2.GetCounterRequest, context: Context
    ) -> counter_pb2.GetCounterResponse:
        async with grpc_errors(context, "GetCounter"):
            validation.check_request(request)
            counter = await self.store.get(request.name)
            return counter_pb2.GetCounterResponse(counter=_to_message(counter))

    async def ListCounters(
        self, request: counter_pb2.ListCountersRequest, context: Context
    ) -> counter_pb2.ListCountersResponse:
        async with grpc_errors(context, "ListCounters"):
            validation.check_request(request)
            page_size = validation.page_size_or_default(request.page_size)
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
            validation.check_request(request)
            name = request.name
            # context.peer() after the client cancelled crashes the process
            # with SIGSEGV (grpcio 1.85), so the finally block logs a copy.
            peer = context.peer()
            logger.info("watch started name=%s peer=%s", name, peer)
            try:
                values = watch_counter(self.store, name)
                async with contextlib.aclosing(values):
                    async for counter in values:
                        yield counter_pb2.WatchCounterResponse(
                            counter=_to_message(counter), revision=counter.revision
                        )
            finally:
                logger.info("watch ended name=%s peer=%s", name, peer)


def _to_message(counter: CounterValue) -> counter_pb2.Counter:
    return counter_pb2.Counter(name=counter.name, value=counter.value)
