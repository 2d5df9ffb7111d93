"""The UserService gRPC servicer: validates requests, calls the stores."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from protos import user_pb2, user_pb2_grpc
from registry.etcd import EtcdClient
from user_svc import validation
from user_svc.errors import AuthenticationError, NotFoundError, grpc_errors
from user_svc.passwords import Passwords
from user_svc.sessions import DEFAULT_SESSION_TTL, SessionStore
from user_svc.storage import UserRecord, UserStore, taken_error

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

# One message for an unknown user and for a wrong password, so that a caller
# cannot learn which usernames exist.
LOGIN_FAILED = "username or password is incorrect"
SESSION_INVALID = "session_token is unknown, expired or logged out; log in again"


class UserServicer(user_pb2_grpc.UserServiceServicer):
    """UserService backed by etcd, where every replica uses the same keys."""

    def __init__(
        self,
        etcd: EtcdClient,
        namespace: str,
        *,
        session_ttl: int = DEFAULT_SESSION_TTL,
        passwords: Passwords | None = None,
    ) -> None:
        self.users = UserStore(etcd, namespace)
        self.sessions = SessionStore(etcd, namespace, session_ttl)
        self.passwords = passwords or Passwords()

    async def CreateUser(
        self, request: user_pb2.CreateUserRequest, context: Context
    ) -> user_pb2.CreateUserResponse:
        async with grpc_errors(context, "CreateUser"):
            validation.check_request(request)
            username = request.username
            # A cheap read first spares the argon2 work for a taken name; the
            # transaction in create() still decides a race between two calls.
            if await self.users.exists(username):
                raise taken_error(username)
            record = UserRecord(
                username=username,
                display_name=request.display_name,
                password_hash=await self.passwords.hash(request.password),
                create_time=_now_rfc3339(),
            )
            await self.users.create(record)
            return user_pb2.CreateUserResponse(user=_to_message(record))

    async def GetUser(
        self, request: user_pb2.GetUserRequest, context: Context
    ) -> user_pb2.GetUserResponse:
        async with grpc_errors(context, "GetUser"):
            validation.check_request(request)
            username = request.username
            record = await self.users.get(username)
            if record is None:
                raise NotFoundError(
                    "username", f"no user named {username!r}; check the spelling"
                )
            return user_pb2.GetUserResponse(user=_to_message(record))

    async def ListUsers(
        self, request: user_pb2.ListUsersRequest, context: Context
    ) -> user_pb2.ListUsersResponse:
        async with grpc_errors(context, "ListUsers"):
            validation.check_request(request)
            page_size = validation.page_size_or_default(request.page_size)
            after = validation.decode_page_token(request.page_token)
            records, more = await self.users.list_page(after, page_size)
            next_token = ""
            if more and records:
                next_token = validation.encode_page_token(records[-1].username)
            return user_pb2.ListUsersResponse(
                users=[_to_message(record) for record in records],
                next_page_token=next_token,
            )

    async def Login(
        self, request: user_pb2.LoginRequest, context: Context
    ) -> user_pb2.LoginResponse:
        async with grpc_errors(context, "Login"):
            validation.check_request(request)
            username, password = request.username, request.password
            record = await self.users.get(username)
            if record is None:
                verified = await self.passwords.verify_dummy(password)
            else:
                verified = await self.passwords.verify(record.password_hash, password)
            if record is None or not verified:
                logger.info("login failed username=%s", username)
                raise AuthenticationError(None, LOGIN_FAILED)
            token, session = await self.sessions.create(username)
            return user_pb2.LoginResponse(
                session_token=token,
                expire_time=_timestamp(session.expire_time),
                user=_to_message(record),
            )

    async def ValidateSession(
        self, request: user_pb2.ValidateSessionRequest, context: Context
    ) -> user_pb2.ValidateSessionResponse:
        async with grpc_errors(context, "ValidateSession"):
            validation.check_request(request)
            session = await self.sessions.get(request.session_token)
            record = await self.users.get(session.username) if session else None
            if session is None or record is None:
                raise AuthenticationError(None, SESSION_INVALID)
            return user_pb2.ValidateSessionResponse(
                user=_to_message(record), expire_time=_timestamp(session.expire_time)
            )

    async def Logout(
        self, request: user_pb2.LogoutRequest, context: Context
    ) -> user_pb2.LogoutResponse:
        async with grpc_errors(context, "Logout"):
            validation.check_request(request)
            await self.sessions.delete(request.session_token)
            return user_pb2.LogoutResponse()


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _timestamp(moment: datetime) -> Timestamp:
    timestamp = Timestamp()
    timestamp.FromDatetime(moment)
    return timestamp


def _to_message(record: UserRecord) -> user_pb2.User:
    return user_pb2.User(
        username=record.username,
        display_name=record.display_name,
        create_time=_timestamp(datetime.fromisoformat(record.create_time)),
    )
