"""HTTP errors of the front, and the one place where backend errors become them.

    FrontError              an error with an HTTP status and a JSON body
    ├── NotLoggedInError    401: no session cookie, or an unknown session
    ├── ForbiddenError      403: the session's user may not do this
    └── TooManyLoginsError  429: too many failed logins (front.login_limits)

Every error response has the body {"error": {"code": ..., "message": ...}}.
`code` is the gRPC status name that fits the HTTP status, so a client sees the
same word whether the error came from a backend or from the front itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from registry.errors import EtcdUnavailableError, MeshError, NoEndpointError

logger = logging.getLogger(__name__)

_HTTP_STATUS_BY_GRPC_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}

# Codes for errors that the front raises itself, by HTTP status.
_CODE_BY_HTTP_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ALREADY_EXISTS",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}

# The backend's own message is passed on only for codes whose message is
# meant for the caller (it names the invalid field or the missing thing).
_CLIENT_FACING_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


class FrontError(Exception):
    """An error that the front returns as JSON with an HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class NotLoggedInError(FrontError):
    def __init__(self, message: str = "not logged in; POST /api/login first") -> None:
        super().__init__(401, "UNAUTHENTICATED", message)


class ForbiddenError(FrontError):
    def __init__(self, message: str) -> None:
        super().__init__(403, "PERMISSION_DENIED", message)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status)


def from_rpc_error(exc: grpc.aio.AioRpcError) -> FrontError:
    """Translate a failed backend call into the HTTP error to return."""
    code = exc.code()
    status = _HTTP_STATUS_BY_GRPC_CODE.get(code, 502)
    if code in _CLIENT_FACING_CODES:
        message = exc.details() or code.name.lower().replace("_", " ")
    else:
        # Internal details of a backend failure stay in the front's log.
        message = f"the backend call failed with {code.name}; try again later"
    return FrontError(status, code.name, message)


def from_mesh_error(exc: MeshError) -> FrontError:
    """Translate a registry error (etcd down, no endpoint) into an HTTP error."""
    if isinstance(exc, NoEndpointError | EtcdUnavailableError):
        return FrontError(503, "UNAVAILABLE", str(exc))
    return FrontError(502, "INTERNAL", f"the service mesh failed: {exc}")


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """Join pydantic errors into one message that names each field."""
    parts = []
    for error in errors:
        location = [str(item) for item in error.get("loc", ())]
        # The first item is the field's location (body, query, path, ...),
        # which the reader does not need to find the field.
        field = ".".join(location[1:]) or ".".join(location) or "request"
        parts.append(f"invalid {field}: {error.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"


async def _handle_front_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FrontError)
    response = error_response(exc.status, exc.code, exc.message)
    response.headers.update(exc.headers)
    return response


async def _handle_rpc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, grpc.aio.AioRpcError)
    error = from_rpc_error(exc)
    logger.info(
        "backend call for %s %s failed: %s %s",
        request.method,
        request.url.path,
        exc.code().name,
        exc.details(),
    )
    return error_response(error.status, error.code, error.message)


async def _handle_mesh_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MeshError)
    error = from_mesh_error(exc)
    logger.warning("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(error.status, error.code, error.message)


async def _handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message = describe_validation_errors(exc.errors())
    return error_response(400, "INVALID_ARGUMENT", message)


async def _handle_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _CODE_BY_HTTP_STATUS.get(exc.status_code, "UNKNOWN")
    response = error_response(exc.status_code, code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error(
        "%s %s failed unexpectedly",
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return error_response(500, "INTERNAL", "internal error; see the front's log")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response of the app a JSON error body."""
    app.add_exception_handler(FrontError, _handle_front_error)
    app.add_exception_handler(grpc.aio.AioRpcError, _handle_rpc_error)
    app.add_exception_handler(MeshError, _handle_mesh_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(HTTPException, _handle_http_error)
    app.add_exception_handler(Exception, _handle_unexpected_error)
