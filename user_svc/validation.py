"""Checks of requests against the limits that user.proto declares.

The limits live in the contract, as protovalidate annotations, and
registry.validation checks them. Each check raises InvalidArgumentError with a
message that names the field and states the limit. Fields marked
`debug_redact` in the contract, the password and the session token, are shown
only by their length, never by their content. Page tokens need the service's
own encoding, so they are checked here in code.
"""

from __future__ import annotations

from google.protobuf.message import Message

from protos import user_pb2
from registry import page_tokens, validation
from user_svc.errors import InvalidArgumentError

# Compiled at import, which is at startup: a declared rule that
# registry.validation cannot check stops the server before it serves.
REQUEST_RULES = validation.rules_of_service(
    user_pb2.DESCRIPTOR.services_by_name["UserService"]
)
_CREATE = validation.MessageRules.of(user_pb2.CreateUserRequest.DESCRIPTOR)
_SESSION = validation.MessageRules.of(user_pb2.ValidateSessionRequest.DESCRIPTOR)
_LIST = validation.MessageRules.of(user_pb2.ListUsersRequest.DESCRIPTOR)

USERNAME_RULE = _CREATE.summary("username")
DEFAULT_PAGE_SIZE = 100

# An encoded username of at most 32 bytes is at most 43 base64 characters.
_PAGE_TOKEN_MAX_LENGTH = 44


def check_request(request: Message) -> None:
    """Raise InvalidArgumentError for the first field that breaks its rule."""
    violation = validation.first_violation(request)
    if violation is not None:
        raise InvalidArgumentError(violation.field, violation.description)


def _check_field(rules: validation.MessageRules, field: str, value: object) -> None:
    violation = rules.check_field(field, value)
    if violation is not None:
        raise InvalidArgumentError(violation.field, violation.description)


def validate_username(username: str) -> str:
    """Return username when it follows the declared rule."""
    _check_field(_CREATE, "username", username)
    return username


def validate_password(password: str) -> str:
    """Return password when its length is within the limits."""
    _check_field(_CREATE, "password", password)
    return password


def validate_display_name(display_name: str) -> str:
    """Return display_name when it passes the declared length and pattern."""
    _check_field(_CREATE, "display_name", display_name)
    return display_name


def validate_session_token(token: str) -> str:
    """Return token when its length is within the limits."""
    _check_field(_SESSION, "session_token", token)
    return token


def validate_page_size(page_size: int) -> int:
    """Return the effective page size: the default for 0, else page_size."""
    _check_field(_LIST, "page_size", page_size)
    return page_size_or_default(page_size)


def page_size_or_default(page_size: int) -> int:
    """Return the page size to use for a valid page_size; 0 means the default."""
    return page_size or DEFAULT_PAGE_SIZE


def encode_page_token(last_username: str) -> str:
    """Return the opaque token that continues a listing after last_username."""
    return page_tokens.encode_page_token(last_username)


def decode_page_token(token: str) -> str | None:
    """Return the last username listed before this page, or None for the first."""
    try:
        return page_tokens.decode_page_token(
            token, max_length=_PAGE_TOKEN_MAX_LENGTH, is_valid_key=_is_valid_username
        )
    except page_tokens.PageTokenError:
        raise InvalidArgumentError(
            "page_token",
            "is not a valid page token; pass next_page_token from the previous "
            "ListUsers response unchanged, or an empty token for the first page",
        ) from None


def _is_valid_username(username: str) -> bool:
    try:
        validate_username(username)
    except InvalidArgumentError:
        return False
    return True
