"""JSON API for the live view of discovery."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter
from sse_starlette import EventSourceResponse, ServerSentEvent

from front.mesh_view import MeshUnavailable, MeshView
from front.models import MeshSnapshot
from front.responses import error_responses
from front.state import StateDep

router = APIRouter(prefix="/api/mesh", tags=["mesh"], responses=error_responses())


@router.get("")
async def get_mesh(state: StateDep) -> MeshSnapshot:
    """List every service in the namespace with its live instances."""
    return await state.view.snapshot()


@router.get("/events", response_class=EventSourceResponse)
async def mesh_events(state: StateDep) -> EventSourceResponse:
    """Stream the view as server-sent events.

    A `snapshot` event carries the same body as GET /api/mesh. It comes at
    once, after every change in discovery, and at least once a second. An
    `unavailable` event carries {"message"} while etcd cannot be read.
    """
    return EventSourceResponse(_mesh_events(state.view))


async def _mesh_events(view: MeshView) -> AsyncIterator[ServerSentEvent]:
    async with contextlib.aclosing(view.updates()) as updates:
        async for update in updates:
            if isinstance(update, MeshUnavailable):
                data = json.dumps({"message": update.message})
                yield ServerSentEvent(data, event="unavailable")
            else:
                yield ServerSentEvent(update.model_dump_json(), event="snapshot")
