"""CSRF protection with a double-submit token.

Every response to a client without a token sets a random one in the `csrf`
cookie, which is not HttpOnly, so that the page's scripts can read it. Every
state-changing request (any method but GET, HEAD, OPTIONS and TRACE) must
send the same value in the X-CSRF-Token header, or it gets 403. Another site
can make a browser send the cookie, but it cannot read the cookie to copy it
into the header.

NOTE: a host that may set cookies for this domain (a sibling subdomain) can
replace the cookie and so pass the check. The front is meant to be served on
its own host name.
"""

from __future__ import annotations

import hmac
import re
import secrets
from http.cookies import SimpleCookie

from starlette.datastructures import MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from front.errors import error_response

CSRF_COOKIE = "csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# secrets.token_urlsafe(32): 32 random bytes in 43 base64url characters.
_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def find_rejection(method: str, cookie: str | None, header: str | None) -> str | None:
    """Return why a request fails the CSRF check, or None when it passes."""
    if method in SAFE_METHODS:
        return None
    if cookie is None:
        return (
            f"missing CSRF token: the {CSRF_COOKIE!r} cookie is missing or "
            f"invalid; load a page of the front to get one, then send its "
            f"value in the {CSRF_HEADER} header"
        )
    if not header:
        return (
            f"missing CSRF token: send the value of the {CSRF_COOKIE!r} cookie "
            f"in the {CSRF_HEADER} header"
        )
    if not hmac.compare_digest(header.encode(), cookie.encode()):
        return (
            f"invalid CSRF token: the {CSRF_HEADER} header does not match the "
            f"{CSRF_COOKIE!r} cookie; reload the page"
        )
    return None


class CsrfMiddleware:
    """Check the double-submit token, and hand out a token when none is sent."""

    def __init__(self, app: ASGIApp, *, secure: bool = False) -> None:
        """secure: mark the cookie Secure on plain HTTP too (TLS at a proxy)."""
        self.app = app
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie, header = _read_token(scope)
        secure = self.secure or scope.get("scheme") == "https"
        issue = None if cookie is not None else _cookie_header(new_token(), secure)

        async def send_with_cookie(message: Message) -> None:
            if issue is not None and message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("Set-Cookie", issue)
            await send(message)

        rejection = find_rejection(scope["method"], cookie, header)
        if rejection is None:
            await self.app(scope, receive, send_with_cookie)
            return
        response = error_response(403, "PERMISSION_DENIED", rejection)
        await response(scope, receive, send_with_cookie)


def _cookie_header(token: str, secure: bool) -> str:
    cookie: SimpleCookie = SimpleCookie()
    cookie[CSRF_COOKIE] = token
    morsel = cookie[CSRF_COOKIE]
    morsel["path"] = "/"
    # Strict: only the front's own pages ever need the token.
    morsel["samesite"] = "Strict"
    if secure:
        morsel["secure"] = True
    return morsel.OutputString()


def _read_token(scope: Scope) -> tuple[str | None, str | None]:
    """Return the valid cookie token, or None, and the header value."""
    cookie_value = None
    header_value = None
    for name, value in scope["headers"]:
        if name == b"cookie":
            # HTTP/2 clients may split the cookies over several headers.
            found = cookie_parser(value.decode("latin-1")).get(CSRF_COOKIE)
            cookie_value = found if found is not None else cookie_value
        elif name == CSRF_HEADER.lower().encode():
            header_value = value.decode("latin-1")
    if cookie_value is None or not _TOKEN_PATTERN.fullmatch(cookie_value):
        return None, header_value
    return cookie_value, header_value
