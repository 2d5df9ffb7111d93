"""UserService against a real etcd: in-process servicer and real processes."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
import grpc.aio
import pytest
from argon2 import PasswordHasher
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from protos import user_pb2, user_pb2_grpc
from registry.model import INSTANCE_METADATA_KEY
from tests.integration.service_process import ServiceProcesses
from user_svc import SERVICE_NAME
from user_svc.passwords import Passwords
from user_svc.servicer import UserServicer

pytestmark = pytest.mark.integration

Stub: TypeAlias = "user_pb2_grpc.UserServiceAsyncStub"
SESSION_TTL = 60
PASSWORD = "correct horse"


class CountingPasswords(Passwords):
    """Cheap argon2 parameters for speed, and a count of verifications."""

    def __init__(self) -> None:
        super().__init__(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        self.verifications = 0

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verifications += 1
        return await super().verify(password_hash, password)

    async def verify_dummy(self, password: str) -> bool:
        self.verifications += 1
        return await super().verify_dummy(password)


@pytest.fixture
def passwords() -> CountingPasswords:
    return CountingPasswords()


@pytest.fixture
def servicer(etcd, mesh_config, passwords) -> UserServicer:
    return UserServicer(
        etcd, mesh_config.namespace, session_ttl=SESSION_TTL, passwords=passwords
    )


async def serve(servicer: UserServicer) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    user_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.fixture
async def stub(servicer) -> AsyncIterator[Stub]:
    server, port = await serve(servicer)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield user_pb2_grpc.UserServiceStub(channel)
    await server.stop(None)


@pytest.fixture
def processes(mesh_config, tmp_path):
    started = ServiceProcesses(mesh_config, tmp_path)
    yield started
    started.stop_all()


async def create(stub: Stub, username: str, display_name: str = "") -> user_pb2.User:
    response = await stub.CreateUser(
        user_pb2.CreateUserRequest(
            username=username, password=PASSWORD, display_name=display_name
        )
    )
    return response.user


async def login(stub: Stub, username: str, password: str = PASSWORD) -> Any:
    return await stub.Login(user_pb2.LoginRequest(username=username, password=password))


async def validate(stub: Stub, token: str) -> user_pb2.ValidateSessionResponse:
    return await stub.ValidateSession(
        user_pb2.ValidateSessionRequest(session_token=token)
    )


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    """Await call and return the error it raised; fail when it succeeded."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def details(error: grpc.aio.AioRpcError) -> str:
    return error.details() or ""


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    fields: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields.extend(violation.field for violation in bad_request.field_violations)
    return fields


# --- users -------------------------------------------------------------------


async def test_create_user_returns_user(stub):
    user = await create(stub, "alice", "Alice A.")

    assert user.username == "alice"
    assert user.display_name == "Alice A."
    assert user.create_time.seconds > 0


async def test_password_is_stored_only_as_argon2_hash(stub, etcd, servicer):
    await create(stub, "hashed")

    stored = await etcd.get(servicer.users.key("hashed"))

    assert stored is not None
    assert PASSWORD.encode() not in stored.value
    assert b'"password_hash":"$argon2id$' in stored.value


async def test_duplicate_username_already_exists(stub):
    await create(stub, "taken")

    error = await rpc_error(create(stub, "taken"))

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(error).startswith("username:")


async def test_concurrent_create_has_one_winner(stub):
    results = await asyncio.gather(
        *(create(stub, "racer", f"try {index}") for index in range(5)),
        return_exceptions=True,
    )

    created = [result for result in results if isinstance(result, user_pb2.User)]
    codes = [
        result.code() for result in results if isinstance(result, grpc.aio.AioRpcError)
    ]
    assert len(created) == 1
    assert codes == [grpc.StatusCode.ALREADY_EXISTS] * 4


async def test_get_user_returns_stored_user(stub):
    created = await create(stub, "bob", "Bob")

    response = await stub.GetUser(user_pb2.GetUserRequest(username="bob"))

    assert response.user == created


async def test_get_unknown_user_not_found(stub):
    error = await rpc_error(stub.GetUser(user_pb2.GetUserRequest(username="nobody")))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "'nobody'" in details(error)


async def test_list_users_walks_every_page(stub):
    names = [f"user{index:02d}" for index in range(23)]
    await asyncio.gather(*(create(stub, name) for name in names))

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = await stub.ListUsers(
            user_pb2.ListUsersRequest(page_size=5, page_token=token)
        )
        seen.extend(user.username for user in response.users)
        pages += 1
        token = response.next_page_token
        if not token:
            break

    assert seen == names
    assert pages == 5


async def test_list_users_empty(stub):
    response = await stub.ListUsers(user_pb2.ListUsersRequest())

    assert list(response.users) == []
    assert response.next_page_token == ""


# --- login and sessions ------------------------------------------------------


async def test_login_starts_session(stub):
    await create(stub, "carol", "Carol")
    before = time.time()

    response = await login(stub, "carol")

    assert len(response.session_token) == 43
    assert response.user.username == "carol"
    assert response.expire_time.seconds >= int(before) + SESSION_TTL - 1


async def test_session_token_is_stored_only_as_hash(stub, etcd, mesh_config):
    await create(stub, "dave")
    token = (await login(stub, "dave")).session_token

    kvs, _ = await etcd.get_prefix(mesh_config.namespace + "/")
    session_key = (
        f"{mesh_config.namespace}/data/user/sessions/"
        + hashlib.sha256(token.encode()).hexdigest()
    )

    assert session_key in {kv.key for kv in kvs}
    assert all(token not in kv.key for kv in kvs)
    assert all(token.encode() not in kv.value for kv in kvs)


async def test_session_lease_has_session_ttl(stub, etcd, servicer):
    await create(stub, "erin")
    token = (await login(stub, "erin")).session_token

    stored = await etcd.get(servicer.sessions.key(token))

    assert stored is not None
    assert 0 < await etcd.lease_time_left(stored.lease) <= SESSION_TTL


async def test_wrong_password_and_unknown_user_look_the_same(stub, passwords):
    await create(stub, "frank")
    passwords.verifications = 0

    wrong = await rpc_error(login(stub, "frank", "not the password"))
    unknown = await rpc_error(login(stub, "nobody", "not the password"))

    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details(wrong) == details(unknown)
    assert wrong.trailing_metadata() == unknown.trailing_metadata()
    # Both paths run one argon2 verification, so both take about as long.
    assert passwords.verifications == 2


async def test_validate_session_returns_user(stub):
    await create(stub, "grace", "Grace")
    session = await login(stub, "grace")

    response = await validate(stub, session.session_token)

    assert response.user.username == "grace"
    assert response.user.display_name == "Grace"
    assert response.expire_time == session.expire_time


async def test_logout_ends_session(stub):
    await create(stub, "heidi")
    token = (await login(stub, "heidi")).session_token

    await stub.Logout(user_pb2.LogoutRequest(session_token=token))
    error = await rpc_error(validate(stub, token))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details(error).startswith("session_token")


async def test_logout_of_unknown_session_succeeds(stub):
    response = await stub.Logout(user_pb2.LogoutRequest(session_token="unknown"))

    assert response == user_pb2.LogoutResponse()


async def test_unknown_session_unauthenticated(stub):
    error = await rpc_error(validate(stub, "x" * 43))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_session_ends_when_lease_is_revoked(stub, etcd, servicer):
    await create(stub, "ivan")
    token = (await login(stub, "ivan")).session_token
    stored = await etcd.get(servicer.sessions.key(token))
    assert stored is not None

    await etcd.revoke_lease(stored.lease)
    error = await rpc_error(validate(stub, token))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_session_expires_after_ttl(etcd, mesh_config, passwords):
    short = UserServicer(
        etcd, mesh_config.namespace, session_ttl=2, passwords=passwords
    )
    server, port = await serve(short)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        await create(stub, "judy")
        token = (await login(stub, "judy")).session_token
        await validate(stub, token)

        codes = []
        for _ in range(100):
            try:
                await validate(stub, token)
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
                break
            await asyncio.sleep(0.1)
    await server.stop(None)

    assert codes == [grpc.StatusCode.UNAUTHENTICATED]


async def test_etcd_down_gives_unavailable(stub, etcd_server):
    etcd_server.kill()

    error = await rpc_error(stub.GetUser(user_pb2.GetUserRequest(username="any")))

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "Traceback" not in details(error)


# --- invalid arguments -------------------------------------------------------

INVALID_CASES = [
    (
        "CreateUser",
        user_pb2.CreateUserRequest(username="", password=PASSWORD),
        "username",
    ),
    (
        "CreateUser",
        user_pb2.CreateUserRequest(username="ab", password=PASSWORD),
        "username",
    ),
    (
        "CreateUser",
        user_pb2.CreateUserRequest(username="a" * 33, password=PASSWORD),
        "username",
    ),
    (
        "CreateUser",
        user_pb2.CreateUserRequest(username="Alice", password=PASSWORD),
        "username",
    ),
    (
        "CreateUser",
        user_pb2.CreateUserRequest(username="1abc", password=PASSWORD),
        "username",
    ),
    (
        "CreateUser",
        user_pb2.CreateUserRequest(username="_abc", password=PASSWORD),
        "username",
    ),
    (
        "CreateUser",
        user_pb2.CreateUserRequest(username="ab/c", password=PASSWORD),
        "username",
    ),
    (
        "CreateUser",
        user_pb2.CreateUserRequest(username="ab c", password=PASSWORD),
        "username",
    ),
    (
        "CreateUser",
        user_pb2.CreateUserRequest(username="abc", password="short"),
        "password",
    ),
    (
        "CreateUser",
        user_pb2.CreateUserRequest(username="abc", password="p" * 129),
        "password",
    ),
    (
        "CreateUser",
        user_pb2.CreateUserRequest(
            username="abc", password=PASSWORD, display_name="d" * 65
        ),
        "display_name",
    ),
    (
        "CreateUser",
        user_pb2.CreateUserRequest(
            username="abc", password=PASSWORD, display_name="a\nb"
        ),
        "display_name",
    ),
    ("GetUser", user_pb2.GetUserRequest(username=""), "username"),
    ("GetUser", user_pb2.GetUserRequest(username="x" * 40), "username"),
    ("GetUser", user_pb2.GetUserRequest(username="bad*name"), "username"),
    ("ListUsers", user_pb2.ListUsersRequest(page_size=-1), "page_size"),
    ("ListUsers", user_pb2.ListUsersRequest(page_size=1001), "page_size"),
    ("ListUsers", user_pb2.ListUsersRequest(page_token="%%%"), "page_token"),
    ("ListUsers", user_pb2.ListUsersRequest(page_token="QUJD"), "page_token"),
    ("ListUsers", user_pb2.ListUsersRequest(page_token="YWJj=="), "page_token"),
    ("ListUsers", user_pb2.ListUsersRequest(page_token="y" * 100), "page_token"),
    ("Login", user_pb2.LoginRequest(username="", password=PASSWORD), "username"),
    ("Login", user_pb2.LoginRequest(username="UPPER", password=PASSWORD), "username"),
    ("Login", user_pb2.LoginRequest(username="abc", password=""), "password"),
    ("Login", user_pb2.LoginRequest(username="abc", password="q" * 129), "password"),
    (
        "ValidateSession",
        user_pb2.ValidateSessionRequest(session_token=""),
        "session_token",
    ),
    (
        "ValidateSession",
        user_pb2.ValidateSessionRequest(session_token="t" * 129),
        "session_token",
    ),
    ("Logout", user_pb2.LogoutRequest(session_token=""), "session_token"),
    ("Logout", user_pb2.LogoutRequest(session_token="t" * 129), "session_token"),
]


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    INVALID_CASES,
    ids=[f"{method}-{index}" for index, (method, _, _) in enumerate(INVALID_CASES)],
)
async def test_invalid_argument_names_field(stub, method, request_message, field):
    error = await rpc_error(getattr(stub, method)(request_message))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(error).startswith(f"{field}:")
    assert field_violations(error) == [field]


async def test_invalid_password_message_hides_password(stub):
    request = user_pb2.CreateUserRequest(username="abc", password="secret7")

    error = await rpc_error(stub.CreateUser(request))

    assert "secret7" not in details(error)
    assert details(error) == "password: must be 8 to 128 characters; got 7 characters"


# --- real processes ----------------------------------------------------------


async def test_process_reply_names_instance(processes, etcd):
    process = await processes.start(etcd, "user_svc", SERVICE_NAME)

    async with grpc.aio.insecure_channel(process.address) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        call = stub.CreateUser(
            user_pb2.CreateUserRequest(username="kim", password=PASSWORD)
        )
        await call
        trailers = dict(await call.trailing_metadata())
        error = await rpc_error(login(stub, "kim", "wrong password"))

    error_trailers: dict[str, Any] = dict(error.trailing_metadata())  # type: ignore[arg-type]
    assert trailers[INSTANCE_METADATA_KEY] == process.instance_id
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_trailers[INSTANCE_METADATA_KEY] == process.instance_id


async def test_session_from_one_replica_validates_on_another(processes, etcd):
    first = await processes.start(
        etcd, "user_svc", SERVICE_NAME, {"MESH_SESSION_TTL": "120"}
    )
    second = await processes.start(etcd, "user_svc", SERVICE_NAME)

    async with (
        grpc.aio.insecure_channel(first.address) as first_channel,
        grpc.aio.insecure_channel(second.address) as second_channel,
    ):
        first_stub = user_pb2_grpc.UserServiceStub(first_channel)
        second_stub = user_pb2_grpc.UserServiceStub(second_channel)
        await create(first_stub, "leo", "Leo")
        token = (await login(first_stub, "leo")).session_token
        validated = await validate(second_stub, token)
        stored = await etcd.get(
            f"{first.config.namespace}/data/user/sessions/"
            + hashlib.sha256(token.encode()).hexdigest()
        )
        assert stored is not None
        time_left = await etcd.lease_time_left(stored.lease)
        await second_stub.Logout(user_pb2.LogoutRequest(session_token=token))
        error = await rpc_error(validate(first_stub, token))

    assert validated.user.username == "leo"
    assert 0 < time_left <= 120
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
