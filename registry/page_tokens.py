"""Page tokens shared by the List methods of the services.

A token is the unpadded URL-safe base64 of the last key on the previous page.
It carries no signature: a client could write its own token, and it would
only choose where a listing starts.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


class PageTokenError(ValueError):
    """A page token is not one that encode_page_token writes."""


def encode_page_token(last_key: str) -> str:
    """Return the token that continues a listing after last_key."""
    return base64.urlsafe_b64encode(last_key.encode()).decode().rstrip("=")


def decode_page_token(
    token: str, *, max_length: int, is_valid_key: Callable[[str], bool]
) -> str | None:
    """Return the key that a token continues after, or None for an empty token.

    Raises PageTokenError for a token that encode_page_token could not have
    written for a valid key, including other spellings of the same bytes.
    """
    if not token:
        return None
    if len(token) > max_length or not _TOKEN_PATTERN.fullmatch(token):
        raise PageTokenError(token)
    padded = token + "=" * (-len(token) % 4)
    try:
        key = base64.urlsafe_b64decode(padded).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise PageTokenError(token) from None
    if not is_valid_key(key) or encode_page_token(key) != token:
        raise PageTokenError(token)
    return key
