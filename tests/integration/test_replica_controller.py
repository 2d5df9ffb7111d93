"""ReplicaController against a real etcd, with sleeping child processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from registry.replicas import (
    GROUPS,
    ReplicaController,
    ReplicaGroup,
    SupervisorRecord,
    replicas_prefix,
    supervisor_key,
)
from registry.supervisor import ChildSpec, Supervisor, SupervisorError

pytestmark = pytest.mark.integration

SLEEPER = "import time; print('up', flush=True); time.sleep(60)"
COUNTER = GROUPS["counter_svc"]


def sleeper_specs(tmp_path: Path) -> Callable[[ReplicaGroup, int], ChildSpec]:
    def make(group: ReplicaGroup, index: int) -> ChildSpec:
        name = f"{group.child_prefix}-{index}"
        argv = (sys.executable, "-c", SLEEPER)
        log = tmp_path / f"{name}.log"
        return ChildSpec(name, argv, dict(os.environ), log, group=group.name)

    return make


class Harness:
    def __init__(self, etcd, config, tmp_path: Path) -> None:
        self.messages: list[str] = []
        self.make = sleeper_specs(tmp_path)
        self.supervisor = Supervisor(
            [self.make(COUNTER, 1)], grace=2.0, report=self.messages.append
        )
        self.controller = ReplicaController(
            etcd, config, self.supervisor, self.make, self.messages.append
        )

    def names(self) -> list[str]:
        return [c.spec.name for c in self.controller.members(COUNTER)]

    async def wait_names(self, expected: list[str]) -> None:
        async with asyncio.timeout(10):
            while sorted(self.names()) != sorted(expected):
                await asyncio.sleep(0.05)

    async def wait_children(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.supervisor.children) != count:
                await asyncio.sleep(0.05)


@pytest.fixture
async def harness(etcd, mesh_config, tmp_path) -> AsyncIterator[Harness]:
    harness = Harness(etcd, mesh_config, tmp_path)
    await harness.controller.claim({"counter_svc": 1})
    await harness.supervisor.start()
    task = asyncio.create_task(harness.controller.run())
    yield harness
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await harness.supervisor.stop()
    await harness.controller.release()


async def test_claim_writes_counts_and_supervisor(etcd, mesh_config, harness):
    count = await etcd.get(replicas_prefix(mesh_config) + "counter_svc")
    holder = await etcd.get(supervisor_key(mesh_config))

    assert count is not None
    assert count.value == b"1"
    assert holder is not None
    assert holder.lease != 0
    record = SupervisorRecord.decode(holder.value)
    assert record is not None
    assert record.pid == os.getpid()


async def test_second_claim_names_holder(etcd, mesh_config, tmp_path, harness):
    other = Harness(etcd, mesh_config, tmp_path / "other")

    with pytest.raises(SupervisorError, match="already supervises namespace") as raised:
        await other.controller.claim({"counter_svc": 3})
    count = await etcd.get(replicas_prefix(mesh_config) + "counter_svc")

    assert f"meshctl up (pid {os.getpid()} on " in str(raised.value)
    assert count is not None
    assert count.value == b"1"


async def test_stored_count_starts_and_retires(etcd, mesh_config, harness):
    key = replicas_prefix(mesh_config) + "counter_svc"

    await etcd.put(key, "3")
    await harness.wait_names(["counter-1", "counter-2", "counter-3"])
    await etcd.put(key, "1")
    await harness.wait_names(["counter-1"])
    await harness.wait_children(1)

    assert any(
        "from 1 to 3 replicas: started counter-2, counter-3" in m
        for m in harness.messages
    )
    assert any(
        "from 3 to 1 replicas: stopping counter-3, counter-2" in m
        for m in harness.messages
    )


async def test_invalid_stored_count_is_ignored(etcd, mesh_config, harness):
    key = replicas_prefix(mesh_config) + "counter_svc"

    await etcd.put(key, "many")
    async with asyncio.timeout(10):
        while not any("ignoring" in m for m in harness.messages):
            await asyncio.sleep(0.05)
    await etcd.put(key, "2")
    await harness.wait_names(["counter-1", "counter-2"])

    assert harness.messages[0] == (
        f"ignoring {key}: invalid replica count 'many': use a whole number "
        "from 0 to 64. Set it with meshctl scale counter_svc=N"
    )


async def test_deleted_count_keeps_replicas(etcd, mesh_config, harness):
    key = replicas_prefix(mesh_config) + "counter_svc"
    await etcd.put(key, "2")
    await harness.wait_names(["counter-1", "counter-2"])

    await etcd.delete(key)
    await asyncio.sleep(0.5)

    assert sorted(harness.names()) == ["counter-1", "counter-2"]


async def test_lost_lease_writes_supervisor_again(etcd, mesh_config, harness):
    key = supervisor_key(mesh_config)
    first = await etcd.get(key)
    assert first is not None

    await etcd.revoke_lease(first.lease)
    async with asyncio.timeout(10):
        while (again := await etcd.get(key)) is None:
            await asyncio.sleep(0.1)

    assert again.lease != first.lease
    assert again.value == first.value


async def test_release_deletes_supervisor_key(etcd, mesh_config, tmp_path):
    harness = Harness(etcd, mesh_config, tmp_path)
    await harness.controller.claim({"counter_svc": 0})

    await harness.controller.release()

    assert await etcd.get(supervisor_key(mesh_config)) is None
