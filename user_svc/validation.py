"""Checks of request fields against the limits documented in user.proto.

Each check raises InvalidArgumentError with a message that names the field
and states the limit. Messages about passwords and session tokens give only
their length, never their content.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata

from user_svc.errors import InvalidArgumentError

USERNAME_RULE = (
    "3 to 32 characters from a-z, 0-9, '_', '-' and '.', starting with a letter"
)
_USERNAME_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{2,31}")
_USERNAME_CHARACTER = re.compile(r"[a-z0-9_.-]")

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
DISPLAY_NAME_MAX_LENGTH = 64
SESSION_TOKEN_MAX_LENGTH = 128

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PAGE_SIZE_RULE = f"0 to {MAX_PAGE_SIZE}, where 0 means {DEFAULT_PAGE_SIZE}"

# An encoded username of at most 32 bytes is at most 43 base64 characters.
_PAGE_TOKEN_MAX_LENGTH = 44
_PAGE_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


def validate_username(username: str) -> str:
    """Return username when it follows USERNAME_RULE."""
    if _USERNAME_PATTERN.fullmatch(username):
        return username
    raise InvalidArgumentError(
        "username", f"must be {USERNAME_RULE}; got {_describe_username(username)}"
    )


def _describe_username(username: str) -> str:
    if not username:
        return "an empty string"
    if not 3 <= len(username) <= 32:
        return f"{len(username)} characters"
    if not "a" <= username[0] <= "z":
        return f"{username[0]!r} at index 0"
    for index, character in enumerate(username):
        if not _USERNAME_CHARACTER.fullmatch(character):
            return f"{character!r} at index {index}"
    return repr(username)


def validate_password(password: str) -> str:
    """Return password when its length is within the limits."""
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise InvalidArgumentError(
            "password",
            f"must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters; "
            f"got {len(password)}",
        )
    return password


def validate_display_name(display_name: str) -> str:
    """Return display_name when it is short enough and has no control characters."""
    rule = f"0 to {DISPLAY_NAME_MAX_LENGTH} characters without control characters"
    if len(display_name) > DISPLAY_NAME_MAX_LENGTH:
        raise InvalidArgumentError(
            "display_name", f"must be {rule}; got {len(display_name)} characters"
        )
    for index, character in enumerate(display_name):
        if unicodedata.category(character) == "Cc":
            raise InvalidArgumentError(
                "display_name",
                f"must be {rule}; got control character {character!r} at index {index}",
            )
    return display_name


def validate_session_token(token: str) -> str:
    """Return token when its length is within 1 to SESSION_TOKEN_MAX_LENGTH."""
    if not 1 <= len(token) <= SESSION_TOKEN_MAX_LENGTH:
        raise InvalidArgumentError(
            "session_token",
            f"must be the token from LoginResponse, 1 to "
            f"{SESSION_TOKEN_MAX_LENGTH} characters; got {len(token)}",
        )
    return token


def validate_page_size(page_size: int) -> int:
    """Return the effective page size: the default for 0, else page_size."""
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgumentError(
            "page_size", f"must be {PAGE_SIZE_RULE}; got {page_size}"
        )
    return page_size or DEFAULT_PAGE_SIZE


def encode_page_token(last_username: str) -> str:
    """Return the opaque token that continues a listing after last_username."""
    return base64.urlsafe_b64encode(last_username.encode()).decode().rstrip("=")


def decode_page_token(token: str) -> str | None:
    """Return the last username listed before this page, or None for the first."""
    if not token:
        return None
    username = _decode_username(token)
    # Only tokens that this service wrote are accepted, so a hand-made token
    # that decodes to a different spelling of the same name is rejected too.
    if username is None or encode_page_token(username) != token:
        raise InvalidArgumentError(
            "page_token",
            "is not a token that ListUsers returned; pass next_page_token from "
            "the previous response unchanged, or an empty token for the first page",
        )
    return username


def _decode_username(token: str) -> str | None:
    if len(token) > _PAGE_TOKEN_MAX_LENGTH or not _PAGE_TOKEN_PATTERN.fullmatch(token):
        return None
    padded = token + "=" * (-len(token) % 4)
    try:
        username = base64.urlsafe_b64decode(padded).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return username if _USERNAME_PATTERN.fullmatch(username) else None
