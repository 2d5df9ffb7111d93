"""JSON API for counters: increment, read, list, and a live stream of values."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

import protos
from front.backends import CounterUpdate
from front.counter_hub import CounterHub
from front.errors import ForbiddenError
from front.models import (
    COUNTER_NAME_PATTERN,
    MAX_PAGE_SIZE,
    MAX_PAGE_TOKEN_LENGTH,
    PERSONAL_COUNTER_PREFIX,
    Counter,
    CounterPage,
    CounterReply,
    IncrementBody,
)
from front.responses import error_responses
from front.sessions import current_session
from front.state import FrontState, StateDep

router = APIRouter(
    prefix="/api/counters", tags=["counters"], responses=error_responses()
)

CounterName = Annotated[
    str,
    Path(
        pattern=COUNTER_NAME_PATTERN,
        description="1 to 64 characters from A-Z, a-z, 0-9, '_', '-' and '.'.",
        examples=["clicks"],
    ),
]


@router.post("/{name}/increment", responses=error_responses(401, 403))
async def increment(
    name: CounterName, body: IncrementBody, request: Request, state: StateDep
) -> CounterReply:
    """Add delta to a counter and return the new value and the serving instance.

    Counters named `user.<username>` can be incremented only by that user.
    """
    await _check_may_increment(name, request, state)
    # A fresh request id makes the mesh's retries of this call safe. A client
    # that retries the HTTP request itself passes its own.
    request_id = body.request_id or uuid.uuid4().hex
    message = protos.counter_pb2.IncrementRequest(
        name=name, delta=body.delta, request_id=request_id
    )
    served = await state.backends.call(state.backends.counters.Increment, message)
    return CounterReply(
        counter=Counter.from_proto(served.response.counter),
        instance=served.instance,
    )


@router.get("/{name}")
async def get_counter(name: CounterName, state: StateDep) -> CounterReply:
    """Return a counter's value. A counter never incremented is 0."""
    message = protos.counter_pb2.GetCounterRequest(name=name)
    served = await state.backends.call(state.backends.counters.GetCounter, message)
    return CounterReply(
        counter=Counter.from_proto(served.response.counter),
        instance=served.instance,
    )


@router.get("")
async def list_counters(
    state: StateDep,
    page_size: Annotated[
        int, Query(ge=0, le=MAX_PAGE_SIZE, description="0 means 100.")
    ] = 0,
    page_token: Annotated[
        str,
        Query(
            max_length=MAX_PAGE_TOKEN_LENGTH,
            description="next_page_token of the previous page; empty for the first.",
        ),
    ] = "",
) -> CounterPage:
    """List counters in name order, one page at a time."""
    message = protos.counter_pb2.ListCountersRequest(
        page_size=page_size, page_token=page_token
    )
    served = await state.backends.call(state.backends.counters.ListCounters, message)
    reply = served.response
    return CounterPage(
        counters=[Counter.from_proto(counter) for counter in reply.counters],
        next_page_token=reply.next_page_token,
    )


@router.get("/{name}/events", response_class=EventSourceResponse)
async def counter_events(name: CounterName, state: StateDep) -> EventSourceResponse:
    """Stream the counter as server-sent events.

    A `value` event carries {"name", "value", "revision"}: first the current
    value, then each change. An `unavailable` event carries {"message",
    "retry_in"} when the backend stream broke and the front is reconnecting.
    """
    return EventSourceResponse(_counter_events(state.hub, name))


async def _counter_events(hub: CounterHub, name: str) -> AsyncIterator[ServerSentEvent]:
    async with hub.subscribe(name) as events:
        async for event in events:
            payload: dict[str, object]
            if isinstance(event, CounterUpdate):
                payload = {
                    "name": event.name,
                    "value": event.value,
                    "revision": event.revision,
                }
                yield ServerSentEvent(json.dumps(payload), event="value")
            else:
                payload = {
                    "message": event.message,
                    "retry_in": round(event.retry_in, 1),
                }
                yield ServerSentEvent(json.dumps(payload), event="unavailable")


async def _check_may_increment(name: str, request: Request, state: FrontState) -> None:
    if not name.startswith(PERSONAL_COUNTER_PREFIX):
        return
    session = await current_session(request, state)
    if session.user.counter != name:
        msg = (
            f"counter {name!r} belongs to another user; you may increment "
            f"{session.user.counter!r} and counters outside {PERSONAL_COUNTER_PREFIX!r}"
        )
        raise ForbiddenError(msg)
