"""Request and response bodies of the JSON API.

The limits repeat the ones in the .proto contracts, so that most bad input
gets a 400 naming the field before any backend call. The services check
again, and their INVALID_ARGUMENT errors also become a 400.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

import protos

COUNTER_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
USERNAME_PATTERN = r"^[a-z][a-z0-9_.-]{2,31}$"
MAX_DELTA = 1_000_000
MAX_PAGE_SIZE = 1000
MAX_PAGE_TOKEN_LENGTH = 1024
# Personal counters are named after their owner: `user.<username>`.
PERSONAL_COUNTER_PREFIX = "user."
# Request bodies take JSON types as they are ("1", true and 1e3 are not an
# integer) and reject unknown fields, so that a typo is not ignored.
STRICT_BODY = ConfigDict(strict=True, extra="forbid")


def _reject_zero(delta: int) -> int:
    if delta == 0:
        msg = "delta must not be 0; use a value from -1000000 to 1000000"
        raise ValueError(msg)
    return delta


class ErrorDetail(BaseModel):
    code: str = Field(examples=["INVALID_ARGUMENT"])
    message: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class IncrementBody(BaseModel):
    model_config = STRICT_BODY

    delta: Annotated[
        int, Field(ge=-MAX_DELTA, le=MAX_DELTA), AfterValidator(_reject_zero)
    ] = 1
    request_id: str | None = Field(
        default=None,
        pattern=REQUEST_ID_PATTERN,
        description="Idempotency key: a retry with the same key is applied once.",
    )


class Counter(BaseModel):
    name: str
    value: int

    @classmethod
    def from_proto(cls, counter: protos.counter_pb2.Counter) -> Counter:
        return cls(name=counter.name, value=counter.value)


class CounterReply(BaseModel):
    counter: Counter
    instance: str = Field(description="Id of the counter instance that served it.")


class CounterPage(BaseModel):
    counters: list[Counter]
    next_page_token: str = Field(description="Empty on the last page.")


class SignUpBody(BaseModel):
    model_config = STRICT_BODY

    username: str = Field(pattern=USERNAME_PATTERN, examples=["ada"])
    password: str = Field(min_length=8, max_length=128)
    display_name: str = Field(default="", max_length=64)


class LoginBody(BaseModel):
    model_config = STRICT_BODY

    # Only lengths are checked here, because the service treats a malformed
    # username like an unknown one, with the same UNAUTHENTICATED error.
    username: str = Field(min_length=1, max_length=32)
    password: str = Field(min_length=1, max_length=128)


class User(BaseModel):
    username: str
    display_name: str
    create_time: datetime | None
    counter: str = Field(description="Name of the user's personal counter.")

    @classmethod
    def from_proto(cls, user: protos.user_pb2.User) -> User:
        created = (
            to_datetime(user.create_time) if user.HasField("create_time") else None
        )
        return cls(
            username=user.username,
            display_name=user.display_name,
            create_time=created,
            counter=personal_counter(user.username),
        )


class Session(BaseModel):
    user: User
    expire_time: datetime | None


class Instance(BaseModel):
    instance_id: str
    address: str
    version: str
    zone: str
    start_time: float | None = Field(
        description="Start time in seconds since the epoch; null when unknown."
    )
    age_seconds: float | None
    calls: int | None = Field(
        description="Calls that this front sent to the instance; null when "
        "the front does not call the service."
    )
    failures: int | None
    in_flight: int | None


class Service(BaseModel):
    name: str
    instances: list[Instance]


class MeshSnapshot(BaseModel):
    namespace: str
    services: list[Service]


class Readiness(BaseModel):
    ready: bool
    missing: list[str] = Field(description="What keeps the front from being ready.")


def personal_counter(username: str) -> str:
    return f"{PERSONAL_COUNTER_PREFIX}{username}"


def to_datetime(timestamp: Timestamp) -> datetime:
    return timestamp.ToDatetime(tzinfo=UTC)
