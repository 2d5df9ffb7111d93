"""Errors of the counter service, and the one place that maps errors to gRPC.

    CounterServiceError
    ├── InvalidArgumentError    a request field is invalid       INVALID_ARGUMENT
    │   └── RequestIdReusedError  request_id names another increment
    ├── CounterOverflowError    the sum would leave int64        OUT_OF_RANGE
    └── ContentionError         compare-and-swap kept failing    ABORTED

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


class CounterServiceError(Exception):
    """Base class of the errors that the counter service raises on purpose."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InvalidArgumentError(CounterServiceError):
    """A request field is invalid. The message names the field and the limit."""


class RequestIdReusedError(InvalidArgumentError):
    """A request_id was already applied to a different counter or delta.

    This is INVALID_ARGUMENT rather than FAILED_PRECONDITION because the fix is
    in the request: send a new request_id for a new increment.
    """


class CounterOverflowError(CounterServiceError):
    """Adding delta would move the counter out of the int64 range."""


class ContentionError(CounterServiceError):
    """The compare-and-swap lost to concurrent writers too many times in a row."""


_STATUS_CODES: dict[type[CounterServiceError], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    CounterOverflowError: grpc.StatusCode.OUT_OF_RANGE,
    ContentionError: grpc.StatusCode.ABORTED,
}


def status_code_for(error: CounterServiceError) -> grpc.StatusCode:
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
    except CounterServiceError as exc:
        await abort_with_details(context, status_code_for(exc), str(exc), exc.field)
    except EtcdUnavailableError as exc:
        logger.warning("etcd unavailable method=%s error=%s", method, exc)
        await abort_with_details(
            context,
            grpc.StatusCode.UNAVAILABLE,
            # A timed-out write may still have been applied, so only a retry
            # with the same request_id is safe.
            "counter storage is unavailable; an increment may or may not have "
            "been applied, so retry with the same request_id",
        )
    except Exception:
        logger.exception("internal error method=%s", method)
        await abort_with_details(
            context,
            grpc.StatusCode.INTERNAL,
            "internal error in the counter service; see the server log",
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
