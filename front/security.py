"""The front's defences, set up in one place: headers, body limit, CSRF, logins.

    install_security(app, SecuritySettings(secure_cookies=True))

Middleware order, outermost first: security headers (outside even the
handler of unexpected errors, so a 500 gets them too), the body limit, the
CSRF check, then FastAPI's routing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from starlette.types import ASGIApp

from front.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from front.csrf import CsrfMiddleware
from front.headers import SecurityHeadersMiddleware
from front.login_limits import Clock, LoginLimiter, LoginLimits


@dataclass(frozen=True)
class SecuritySettings:
    # Mark cookies Secure even on plain HTTP, for a front behind a proxy
    # that terminates TLS. Under the front's own TLS they are Secure anyway.
    secure_cookies: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    login_limits: LoginLimits = field(default_factory=LoginLimits)


def install_security(
    app: FastAPI, settings: SecuritySettings, clock: Clock = time.monotonic
) -> None:
    app.state.security = settings
    app.state.login_limiter = LoginLimiter(settings.login_limits, clock)
    # add_middleware puts each new middleware outside the ones added before.
    app.add_middleware(CsrfMiddleware, secure=settings.secure_cookies)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    build_stack = app.build_middleware_stack

    # Starlette sends the reply of the handler for unexpected errors from its
    # outermost middleware, past every added one, so the headers wrap the
    # whole stack instead.
    def build_with_headers() -> ASGIApp:
        return SecurityHeadersMiddleware(build_stack())

    app.build_middleware_stack = build_with_headers  # type: ignore[method-assign]


def cookies_secure(request: Request) -> bool:
    """Return whether cookies set on this request's response get Secure."""
    settings: SecuritySettings = request.app.state.security
    return settings.secure_cookies or request.url.scheme == "https"


def login_limiter(request: Request) -> LoginLimiter:
    limiter: LoginLimiter = request.app.state.login_limiter
    return limiter


def client_address(request: Request) -> str:
    # NOTE: behind a reverse proxy this is the proxy's address unless
    # `python -m front --forwarded-allow-ips` trusts its X-Forwarded-For.
    return request.client.host if request.client else "unknown"


LimiterDep = Annotated[LoginLimiter, Depends(login_limiter)]
