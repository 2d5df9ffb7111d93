"""The front's headers, CSRF check, body limit, cookies and secret hygiene."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from front.csrf import CSRF_COOKIE, CSRF_HEADER
from front.headers import PAGE_POLICY, REDOC_POLICY
from front.routes_pages import STATIC_DIR
from front.security import SecuritySettings
from tests.integration.front_server import prime_csrf
from tests.unit.front_fakes import (
    COUNTER,
    USER,
    Backend,
    FakeMesh,
    app_with,
    fake_config,
)

PASSWORD = "correct horse battery"
EXPECTED_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


@pytest.fixture
async def backend():
    server = Backend("fake-1")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def mesh(backend):
    fake = FakeMesh(fake_config())
    for service in (COUNTER, USER):
        fake.resolver(service).set_endpoints([backend.endpoint(service)])
    yield fake
    await fake.close()


@contextlib.asynccontextmanager
async def open_client(
    mesh, *, base_url: str = "http://front.test", **options
) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = app_with(mesh, **options)

    @app.get("/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("boom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=base_url) as http,
    ):
        yield http


@pytest.fixture
async def client(mesh):
    async with open_client(mesh) as http:
        yield http


def error_of(response: httpx.Response) -> dict[str, str]:
    error: dict[str, str] = response.json()["error"]
    return error


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/mesh", 200),
        ("GET", "/docs", 200),
        ("GET", "/static/common.js", 200),
        ("GET", "/healthz", 200),
        ("GET", "/api/me", 401),
        ("GET", "/nowhere", 404),
        ("PUT", "/healthz", 403),
        ("GET", "/boom", 500),
    ],
)
async def test_security_headers_on_every_response(client, method, path, status):
    response = await client.request(method, path)

    assert response.status_code == status
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers[name] == value, name
    assert "camera=()" in response.headers["permissions-policy"]
    assert response.headers["content-security-policy"] == PAGE_POLICY


def test_page_policy_allows_only_own_scripts_and_styles():
    directives = dict(part.split(" ", 1) for part in PAGE_POLICY.split("; "))

    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in PAGE_POLICY


async def test_redoc_gets_relaxed_styles_only(client):
    response = await client.get("/redoc")

    policy = response.headers["content-security-policy"]
    assert response.status_code == 200
    assert policy == REDOC_POLICY
    assert "script-src 'self';" in policy
    assert "style-src 'self' 'unsafe-inline'" in policy


async def test_api_replies_are_not_cached(client):
    response = await client.get("/api/me")

    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("page", sorted(p.name for p in STATIC_DIR.glob("*.html")))
def test_static_pages_have_no_inline_code(page):
    html = (STATIC_DIR / page).read_text()

    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None
    assert "<style" not in html
    assert re.search(r"\sstyle=", html) is None
    assert re.search(r"\son[a-z]+=", html) is None


async def test_first_response_sets_csrf_cookie(client):
    response = await client.get("/healthz")

    cookie = response.headers["set-cookie"]
    assert re.match(rf"{CSRF_COOKIE}=[A-Za-z0-9_-]{{43}}; ", cookie)
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    assert "httponly" not in cookie.lower()
    assert "secure" not in cookie.lower()


async def test_csrf_cookie_is_set_once(client):
    await client.get("/healthz")

    again = await client.get("/healthz")

    assert "set-cookie" not in again.headers


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        (None, None, "missing CSRF token: the 'csrf' cookie is missing"),
        ("a" * 43, None, "missing CSRF token: send the value"),
        ("a" * 43, "b" * 43, "invalid CSRF token"),
        ("short", "short", "missing CSRF token: the 'csrf' cookie is missing"),
    ],
)
async def test_post_without_matching_token_is_rejected(
    client, backend, cookie, header, expected
):
    if cookie is not None:
        client.cookies.set(CSRF_COOKIE, cookie)
    headers = {CSRF_HEADER: header} if header is not None else {}

    response = await client.post(
        "/api/counters/clicks/increment", json={}, headers=headers
    )

    assert response.status_code == 403
    assert error_of(response)["code"] == "PERMISSION_DENIED"
    assert error_of(response)["message"].startswith(expected)
    assert CSRF_HEADER in error_of(response)["message"]
    assert backend.counters.values == {}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/login"),
        ("POST", "/api/users"),
        ("POST", "/api/logout"),
        ("DELETE", "/api/counters/clicks"),
        ("PUT", "/api/counters/clicks"),
        ("PATCH", "/api/counters/clicks"),
    ],
)
async def test_every_state_changing_method_needs_token(client, method, path):
    response = await client.request(method, path, json={})

    assert response.status_code == 403
    assert error_of(response)["message"].startswith("missing CSRF token")


async def test_post_with_token_passes(client, backend):
    token = await prime_csrf(client)

    response = await client.post("/api/counters/clicks/increment", json={})

    assert len(token) == 43
    assert response.status_code == 200
    assert backend.counters.values == {"clicks": 1}


async def test_rejected_post_hands_out_a_token(client):
    response = await client.post("/api/counters/clicks/increment", json={})

    assert response.status_code == 403
    assert response.cookies.get(CSRF_COOKIE)


async def test_body_over_limit_gets_413(client, backend):
    await prime_csrf(client)
    body = b'{"delta": 1, "pad": "' + b"x" * 16 * 1024 + b'"}'

    response = await client.post(
        "/api/counters/clicks/increment",
        content=body,
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert error_of(response)["code"] == "RESOURCE_EXHAUSTED"
    assert "16384 bytes" in error_of(response)["message"]
    assert backend.counters.values == {}


async def test_chunked_body_over_limit_gets_413(client, backend):
    await prime_csrf(client)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"delta": 1, "pad": "'
        for _ in range(20):
            yield b"x" * 1024
        yield b'"}'

    response = await client.post(
        "/api/counters/clicks/increment",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )

    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert error_of(response)["code"] == "RESOURCE_EXHAUSTED"
    assert backend.counters.values == {}


async def test_body_under_limit_passes(client, backend):
    await prime_csrf(client)
    # JSON whitespace pads the body, since unknown fields are rejected.
    body = '{"delta": 1, "request_id": "r1"' + " " * (15 * 1024) + "}"

    response = await client.post(
        "/api/counters/clicks/increment",
        content=body,
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 200
    assert backend.counters.values == {"clicks": 1}


async def sign_up_and_log_in(client: httpx.AsyncClient) -> httpx.Response:
    await prime_csrf(client)
    await client.post("/api/users", json={"username": "ada", "password": PASSWORD})
    return await client.post(
        "/api/login", json={"username": "ada", "password": PASSWORD}
    )


async def test_session_cookie_flags_on_http(client):
    login = await sign_up_and_log_in(client)

    cookie = login.headers["set-cookie"]
    assert login.status_code == 200
    assert cookie.startswith("mesh_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie


async def test_cookies_secure_under_tls(mesh):
    async with open_client(mesh, base_url="https://front.test") as client:
        first = await client.get("/healthz")
        login = await sign_up_and_log_in(client)

    assert "Secure" in first.headers["set-cookie"]
    assert login.status_code == 200
    assert "Secure" in login.headers["set-cookie"]
    assert "HttpOnly" in login.headers["set-cookie"]


async def test_cookies_secure_behind_tls_proxy(mesh):
    settings = SecuritySettings(secure_cookies=True)
    async with open_client(mesh, security=settings) as client:
        first = await client.get("/healthz")
        token = first.cookies[CSRF_COOKIE]
        # httpx keeps Secure cookies off plain HTTP, as browsers do, but a
        # proxy that terminates TLS forwards them.
        headers = {"Cookie": f"{CSRF_COOKIE}={token}", CSRF_HEADER: token}
        account = {"username": "ada", "password": PASSWORD}
        await client.post("/api/users", json=account, headers=headers)
        login = await client.post("/api/login", json=account, headers=headers)

    assert "Secure" in first.headers["set-cookie"]
    assert login.status_code == 200
    assert "Secure" in login.headers["set-cookie"]
    assert "HttpOnly" in login.headers["set-cookie"]


async def test_unknown_user_and_wrong_password_look_alike(client):
    await sign_up_and_log_in(client)
    client.cookies.delete("mesh_session")

    unknown = await client.post(
        "/api/login", json={"username": "nobody", "password": PASSWORD}
    )
    wrong = await client.post(
        "/api/login", json={"username": "ada", "password": "wrong password"}
    )

    assert unknown.status_code == 401
    assert wrong.status_code == unknown.status_code
    assert wrong.content == unknown.content
    assert wrong.headers.multi_items() == unknown.headers.multi_items()


async def test_secrets_stay_out_of_logs_and_replies(client, caplog):
    caplog.set_level(logging.DEBUG)
    login = await sign_up_and_log_in(client)
    token = client.cookies["mesh_session"]
    replies = [
        login,
        await client.get("/api/me"),
        await client.post(
            "/api/login", json={"username": "ada", "password": "x" * 200}
        ),
        await client.post("/api/login", json={"username": "ada", "password": "nope"}),
        await client.post("/api/logout"),
        await client.get("/api/me"),
        await client.get("/metrics"),
    ]

    assert len(token) > 20
    for secret in (PASSWORD, token, "x" * 200, "nope"):
        assert secret not in caplog.text
        for reply in replies:
            assert secret not in reply.text
    # The failed logins were logged, so the check above saw the log lines.
    assert "POST /api/login failed" in caplog.text
