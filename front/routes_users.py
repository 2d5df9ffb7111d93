"""JSON API for users and sessions: sign-up, login, logout and the current user."""

from __future__ import annotations

import grpc
import grpc.aio
from fastapi import APIRouter, Request, Response

import protos
from front.models import LoginBody, Session, SignUpBody, User, to_datetime
from front.responses import error_responses
from front.security import LimiterDep, client_address
from front.sessions import (
    MAX_TOKEN_LENGTH,
    SessionDep,
    clear_session_cookie,
    session_token,
    set_session_cookie,
)
from front.state import StateDep

router = APIRouter(prefix="/api", tags=["users"], responses=error_responses(401, 409))


@router.post("/users", status_code=201)
async def create_user(body: SignUpBody, state: StateDep) -> User:
    """Create a user. A taken username gets 409."""
    request = protos.user_pb2.CreateUserRequest(
        username=body.username,
        password=body.password,
        display_name=body.display_name,
    )
    served = await state.backends.call(state.backends.users.CreateUser, request)
    return User.from_proto(served.response.user)


@router.post("/login", responses=error_responses(429))
async def login(
    body: LoginBody,
    request: Request,
    response: Response,
    state: StateDep,
    limiter: LimiterDep,
) -> Session:
    """Check the password and start a session in an HttpOnly cookie.

    An unknown user and a wrong password get the same 401. Too many failed
    logins for one username or from one address get 429 with Retry-After.
    """
    attempt = limiter.start(body.username, client_address(request))
    login_request = protos.user_pb2.LoginRequest(
        username=body.username, password=body.password
    )
    try:
        served = await state.backends.call(state.backends.users.Login, login_request)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            attempt.failed()
        else:
            attempt.cancelled()
        raise
    except BaseException:
        # No live backend, or the client went away: no password was checked.
        attempt.cancelled()
        raise
    attempt.succeeded()
    reply = served.response
    expire_time = (
        to_datetime(reply.expire_time) if reply.HasField("expire_time") else None
    )
    set_session_cookie(response, request, reply.session_token, expire_time)
    return Session(user=User.from_proto(reply.user), expire_time=expire_time)


@router.post("/logout", status_code=204)
async def logout(request: Request, response: Response, state: StateDep) -> None:
    """End the session and clear the cookie. Without a session it does nothing."""
    token = session_token(request)
    # A token longer than any real one is a broken cookie: clear it only.
    if token is not None and len(token) <= MAX_TOKEN_LENGTH:
        logout_request = protos.user_pb2.LogoutRequest(session_token=token)
        await state.backends.call(state.backends.users.Logout, logout_request)
    clear_session_cookie(response, request)


@router.get("/me")
async def me(session: SessionDep) -> Session:
    """Return the logged-in user and the name of their personal counter."""
    return session
