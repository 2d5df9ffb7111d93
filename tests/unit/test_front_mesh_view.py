"""MeshView: snapshots of discovery, pushed when instances come and go."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from front.mesh_view import MeshUnavailable, MeshView
from front.models import MeshSnapshot
from registry.mesh import Mesh
from tests.unit.front_fakes import COUNTER, USER, Backend, FakeMesh, fake_config


def instance_ids(snapshot: MeshSnapshot | MeshUnavailable, service: str) -> list[str]:
    assert isinstance(snapshot, MeshSnapshot), snapshot
    (found,) = [s for s in snapshot.services if s.name == service]
    return [instance.instance_id for instance in found.instances]


async def test_snapshot_lists_called_services_without_instances():
    mesh = FakeMesh(fake_config())
    channels = {COUNTER: mesh.channel(COUNTER)}
    view = MeshView(cast("Mesh", mesh), channels)

    snapshot = await view.snapshot()

    assert [service.name for service in snapshot.services] == [COUNTER]
    assert snapshot.services[0].instances == []
    await view.close()
    await mesh.close()


async def test_snapshot_counts_calls_only_for_called_services():
    mesh = FakeMesh(fake_config())
    backend = Backend("b-1")
    mesh.resolver(COUNTER).set_endpoints([backend.endpoint(COUNTER)])
    mesh.resolver(USER).set_endpoints([backend.endpoint(USER)])
    view = MeshView(
        cast("Mesh", mesh), {COUNTER: mesh.channel(COUNTER)}, clock=lambda: 1e10
    )

    snapshot = await view.snapshot()

    counter, user = snapshot.services
    assert counter.instances[0].calls == 0
    assert user.instances[0].calls is None
    assert user.instances[0].age_seconds is not None
    assert user.instances[0].age_seconds > 0
    await view.close()
    await mesh.close()


async def test_updates_follow_discovery_events():
    mesh = FakeMesh(fake_config())
    first, second = Backend("b-1"), Backend("b-2")
    mesh.resolver(COUNTER).set_endpoints([first.endpoint(COUNTER)])
    view = MeshView(cast("Mesh", mesh), {})
    received: list[Any] = []

    # An interval far longer than the test proves that events, not the
    # periodic refresh, bring the later snapshots.
    async with contextlib.aclosing(view.updates(interval=3600)) as updates:
        async with asyncio.timeout(5):
            received.append(await anext(updates))
            mesh.resolver(COUNTER).set_endpoints(
                [first.endpoint(COUNTER), second.endpoint(COUNTER)]
            )
            received.append(await anext(updates))
            mesh.resolver(COUNTER).set_endpoints([second.endpoint(COUNTER)])
            received.append(await anext(updates))

    assert instance_ids(received[0], COUNTER) == ["b-1"]
    assert instance_ids(received[1], COUNTER) == ["b-1", "b-2"]
    assert instance_ids(received[2], COUNTER) == ["b-2"]
    await view.close()
    await mesh.close()


async def test_updates_report_unreachable_etcd():
    mesh = FakeMesh(fake_config())
    mesh.etcd.up = False
    view = MeshView(cast("Mesh", mesh), {})

    async with contextlib.aclosing(view.updates(interval=3600)) as updates:
        update = await asyncio.wait_for(anext(updates), 5)

    assert isinstance(update, MeshUnavailable)
    assert "test says it is down" in update.message
    await view.close()
