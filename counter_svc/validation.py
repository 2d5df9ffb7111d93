"""Checks of request fields against the limits documented in counter.proto.

Each check raises InvalidArgumentError with a message that names the field,
states the limit and shows what the request contained.
"""

from __future__ import annotations

import base64
import binascii
import re

from counter_svc.errors import InvalidArgumentError

NAME_MAX_LENGTH = 64
NAME_RULE = "1 to 64 characters from A-Z, a-z, 0-9, '_', '-' and '.'"
_NAME_CHARACTER = re.compile(r"[A-Za-z0-9_.-]")

REQUEST_ID_MAX_LENGTH = 64
REQUEST_ID_RULE = "empty, or 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"
_REQUEST_ID_CHARACTER = re.compile(r"[A-Za-z0-9_-]")

MAX_DELTA = 1_000_000
DELTA_RULE = f"a non-zero integer from {-MAX_DELTA} to {MAX_DELTA}"

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PAGE_SIZE_RULE = f"0 to {MAX_PAGE_SIZE}, where 0 means {DEFAULT_PAGE_SIZE}"

# An encoded name of at most 64 bytes is at most 86 base64 characters.
_PAGE_TOKEN_MAX_LENGTH = 88
_PAGE_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


def validate_name(name: str, field: str = "name") -> str:
    """Return name when it is a valid counter name."""
    _check_characters(field, name, NAME_RULE, NAME_MAX_LENGTH, _NAME_CHARACTER)
    return name


def validate_request_id(request_id: str) -> str:
    """Return request_id when it is empty or a valid idempotency key."""
    if request_id:
        _check_characters(
            "request_id",
            request_id,
            REQUEST_ID_RULE,
            REQUEST_ID_MAX_LENGTH,
            _REQUEST_ID_CHARACTER,
        )
    return request_id


def validate_delta(delta: int) -> int:
    """Return delta when it is non-zero and within +-MAX_DELTA."""
    if delta == 0 or not -MAX_DELTA <= delta <= MAX_DELTA:
        raise InvalidArgumentError("delta", f"must be {DELTA_RULE}; got {delta}")
    return delta


def validate_page_size(page_size: int) -> int:
    """Return the effective page size: the default for 0, else page_size."""
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgumentError(
            "page_size", f"must be {PAGE_SIZE_RULE}; got {page_size}"
        )
    return page_size or DEFAULT_PAGE_SIZE


def encode_page_token(last_name: str) -> str:
    """Return the opaque token that continues a listing after last_name."""
    return base64.urlsafe_b64encode(last_name.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str | None:
    """Return the last name listed before this page, or None for the first page."""
    if not token:
        return None
    name = _decode_name(token)
    # Only tokens that this service wrote are accepted, so a hand-made token
    # that decodes to a different spelling of the same name is rejected too.
    if name is None or encode_page_token(name) != token:
        raise InvalidArgumentError(
            "page_token",
            "is not a token that ListCounters returned; pass next_page_token "
            "from the previous response unchanged, or an empty token for the "
            "first page",
        )
    return name


def _decode_name(token: str) -> str | None:
    if len(token) > _PAGE_TOKEN_MAX_LENGTH:
        return None
    if not _PAGE_TOKEN_PATTERN.fullmatch(token):
        return None
    padded = token + "=" * (-len(token) % 4)
    try:
        name = base64.urlsafe_b64decode(padded).decode()
        validate_name(name)
    except (binascii.Error, UnicodeDecodeError, InvalidArgumentError):
        return None
    return name


def _check_characters(
    field: str, value: str, rule: str, max_length: int, allowed: re.Pattern[str]
) -> None:
    if not value:
        raise InvalidArgumentError(field, f"must be {rule}; got an empty string")
    if len(value) > max_length:
        raise InvalidArgumentError(
            field, f"must be {rule}; got {len(value)} characters"
        )
    for index, character in enumerate(value):
        if not allowed.fullmatch(character):
            raise InvalidArgumentError(
                field,
                f"must be {rule}; got {character!r} at index {index}",
            )
