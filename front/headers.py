"""Security headers on every response of the front, errors included.

The pages load only scripts, styles and images from the front itself, with
no inline script or style, so the Content-Security-Policy allows 'self' and
nothing else. The ReDoc page is the one exception (see REDOC_POLICY).
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _policy(*directives: str) -> str:
    return "; ".join(directives)


PAGE_POLICY = _policy(
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)
# ReDoc, from its bundled script, adds <style> elements (which CSP counts as
# inline styles), draws icons from data: URLs and runs its search in a
# worker made from a blob: URL. Its scripts still come only from 'self', and
# the Redocly logo that it loads from a CDN stays blocked. Swagger UI on
# /docs works under PAGE_POLICY.
REDOC_POLICY = _policy(
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "worker-src 'self' blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)
RELAXED_POLICIES = {"/redoc": REDOC_POLICY}

COMMON_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def security_headers(path: str) -> dict[str, str]:
    """Return the headers that a response to path gets."""
    policy = RELAXED_POLICIES.get(path, PAGE_POLICY)
    headers = {"Content-Security-Policy": policy, **COMMON_HEADERS}
    if path.startswith("/api/"):
        # JSON replies carry user data, such as /api/me: keep them out of
        # shared and browser caches. Streams set their own Cache-Control.
        headers["Cache-Control"] = "no-store"
    return headers


class SecurityHeadersMiddleware:
    """Set the security headers on every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = security_headers(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in headers.items():
                    if name == "Cache-Control" and name in response_headers:
                        continue
                    response_headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
