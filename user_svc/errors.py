"""Errors of the user service, and the one place that maps errors to gRPC.

    UserServiceError
    ├── InvalidArgumentError   a request field is invalid      INVALID_ARGUMENT
    ├── AlreadyExistsError     the username is taken           ALREADY_EXISTS
    ├── NotFoundError          no user with that username      NOT_FOUND
    └── AuthenticationError    wrong credentials or session    UNAUTHENTICATED

Registry errors map too: EtcdUnavailableError is UNAVAILABLE, and any other
error is INTERNAL with a generic message, so no traceback reaches a client.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
from google.rpc import (  # type: ignore[import-untyped]
    code_pb2,
    error_details_pb2,
    status_pb2,
)
from grpc_status import rpc_status

from registry.errors import EtcdUnavailableError

logger = logging.getLogger(__name__)


class UserServiceError(Exception):
    """Base class of the errors that the user service raises on purpose.

    `field` names the request field at fault, or is None when no single
    field is (a failed login must not say which of the two was wrong).
    """

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class InvalidArgumentError(UserServiceError):
    """A request field is invalid. The message names the field and the limit."""


class AlreadyExistsError(UserServiceError):
    """A user with the requested username exists already."""


class NotFoundError(UserServiceError):
    """No user has the requested username."""


class AuthenticationError(UserServiceError):
    """The credentials or the session token are not valid."""


_STATUS_CODES: dict[type[UserServiceError], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
}


def status_code_for(error: UserServiceError) -> grpc.StatusCode:
    """Return the gRPC status code of a service error."""
    for error_type in type(error).__mro__:
        code = _STATUS_CODES.get(error_type)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


@contextlib.asynccontextmanager
async def grpc_errors(
    context: grpc.aio.ServicerContext[Any, Any], method: str
) -> AsyncIterator[None]:
    """End the call with a gRPC status for any error raised inside the block."""
    try:
        yield
    except grpc.aio.AbortError:
        raise
    except UserServiceError as exc:
        code = status_code_for(exc)
        # Only INVALID_ARGUMENT carries field violations.
        field = exc.field if code == grpc.StatusCode.INVALID_ARGUMENT else None
        await abort_with_details(context, code, str(exc), field)
    except EtcdUnavailableError as exc:
        logger.warning("etcd unavailable method=%s error=%s", method, exc)
        await abort_with_details(
            context,
            grpc.StatusCode.UNAVAILABLE,
            "user storage is unavailable; retry later",
        )
    except Exception:
        logger.exception("internal error method=%s", method)
        await abort_with_details(
            context,
            grpc.StatusCode.INTERNAL,
            "internal error in the user service; see the server log",
        )


async def abort_with_details(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    field: str | None = None,
) -> NoReturn:
    """Abort the call with a google.rpc.Status that carries a BadRequest when
    a field is named, keeping trailing metadata that is already set."""
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if field is not None:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=field, description=message
        )
        status.details.add().Pack(
            error_details_pb2.BadRequest(field_violations=[violation])
        )
    rich = rpc_status.to_status(status)
    trailing = tuple(context.trailing_metadata() or ()) + tuple(rich.trailing_metadata)
    await context.abort(code, message, trailing)
    raise AssertionError("context.abort returned")  # pragma: no cover
