"""Login sessions: the UserService token in an HttpOnly cookie.

The cookie contains the token that UserService.Login returned. It is HttpOnly,
so page scripts cannot read it, SameSite=Lax, so that browsers do not send it
with POST requests from other sites, and Secure under TLS (see
front.security.cookies_secure). Every request that needs a user checks the
token with UserService.ValidateSession.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import grpc
import grpc.aio
from fastapi import Depends, Request, Response

import protos
from front.errors import NotLoggedInError
from front.models import Session, User, to_datetime
from front.security import cookies_secure
from front.state import StateDep

SESSION_COOKIE = "mesh_session"
MAX_TOKEN_LENGTH = 128
_NOT_LOGGED_IN_CODES = frozenset(
    {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT}
)


def set_session_cookie(
    response: Response, request: Request, token: str, expire_time: datetime | None
) -> None:
    max_age = None
    if expire_time is not None:
        left = (expire_time - datetime.now(UTC)).total_seconds()
        max_age = max(1, int(left))
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=cookies_secure(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="lax",
        secure=cookies_secure(request),
    )


def session_token(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


async def current_session(request: Request, state: StateDep) -> Session:
    """Return the session behind the cookie, or raise NotLoggedInError."""
    token = session_token(request)
    if token is None:
        raise NotLoggedInError
    if len(token) > MAX_TOKEN_LENGTH:
        raise NotLoggedInError("the session cookie is invalid; log in again")
    users = state.backends.users
    request_message = protos.user_pb2.ValidateSessionRequest(session_token=token)
    try:
        served = await state.backends.call(users.ValidateSession, request_message)
    except grpc.aio.AioRpcError as exc:
        # A token that the service rejects as malformed is a broken cookie,
        # which the user fixes the same way: by logging in again.
        if exc.code() in _NOT_LOGGED_IN_CODES:
            message = "the session expired or was ended; log in again"
            raise NotLoggedInError(message) from exc
        raise
    reply = served.response
    expire_time = (
        to_datetime(reply.expire_time) if reply.HasField("expire_time") else None
    )
    return Session(user=User.from_proto(reply.user), expire_time=expire_time)


SessionDep = Annotated[Session, Depends(current_session)]
