"""A limit on the size of request bodies: 413 with a JSON error body.

The largest real request, a sign-up, is well under 1 KiB, so the default of
16 KiB leaves room and still keeps a client from making the front buffer
megabytes.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from front.errors import error_response

DEFAULT_MAX_BODY_BYTES = 16 * 1024


class BodyTooLargeError(HTTPException):
    """A request body is larger than the limit.

    It is an HTTPException, so that FastAPI passes it on unchanged when it
    comes out of reading the body, and the app's handler returns 413.
    """

    def __init__(self, limit: int) -> None:
        message = f"the request body is larger than {limit} bytes; send a smaller body"
        super().__init__(status_code=413, detail=message)


class BodyLimitMiddleware:
    """Reject a request whose body exceeds max_bytes with 413.

    A Content-Length over the limit is rejected before the app runs. A body
    without a length (chunked) is counted as the app reads it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _content_length(scope) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0
        started = False

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLargeError(self.max_bytes)
            return message

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_limited, send_tracked)
        except BodyTooLargeError:
            # Only a part of the app that reads the body on its own, outside
            # FastAPI's handlers, lets the error come this far.
            if started:
                raise
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = BodyTooLargeError(self.max_bytes)
        response = error_response(413, "RESOURCE_EXHAUSTED", error.detail)
        # The body is left unread, so the connection is closed after the
        # reply instead of being reused.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
