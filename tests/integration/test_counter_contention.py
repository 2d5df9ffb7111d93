"""Per-request increments under steady contention on one counter."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from counter_svc.errors import ContentionError
from counter_svc.storage import CounterStore

pytestmark = pytest.mark.integration


async def test_closed_loop_writers_never_exhaust_attempts(etcd, mesh_config):
    stores = [CounterStore(etcd, mesh_config.namespace) for _ in range(6)]
    failures: list[ContentionError] = []

    async def writer(store: CounterStore) -> None:
        for _ in range(120):
            try:
                await store.increment("hot", 1, uuid.uuid4().hex)
            except ContentionError as exc:
                failures.append(exc)

    await asyncio.gather(*(writer(store) for store in stores))
    final = await stores[0].get("hot")

    assert failures == []
    assert final.value == 6 * 120
