"""The hardened front as a real process, with real etcd and service processes.

Login limits, the CSRF check, look-alike login failures and secrets in logs
over HTTP; cookie flags and the Content-Security-Policy in headless Chromium,
over HTTP and over HTTPS with a certificate from `meshctl certs init`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from counter_svc import SERVICE_NAME as COUNTER
from front.csrf import CSRF_COOKIE, CSRF_HEADER
from registry.certs import identity_paths
from registry.cli_certs import CertsOptions, init_certs
from tests.integration.front_server import FrontProcess, poll_until, prime_csrf
from tests.integration.service_process import ServiceProcesses
from tests.integration.test_browser import CHROMIUM, CHROMIUM_ARGS, EXPECT_TIMEOUT_MS
from user_svc import SERVICE_NAME as USER

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


@pytest.fixture
def processes(mesh_config, tmp_path):
    started = ServiceProcesses(mesh_config, tmp_path)
    yield started
    started.stop_all()


async def start_mesh(
    processes: ServiceProcesses, etcd, front: FrontProcess
) -> FrontProcess:
    await processes.start(etcd, "counter_svc", COUNTER)
    await processes.start(etcd, "user_svc", USER)
    await front.start()
    return front


@pytest.fixture
async def front(mesh_config, etcd, processes, tmp_path) -> AsyncIterator[FrontProcess]:
    started = FrontProcess(mesh_config, tmp_path / "front.log")
    yield await start_mesh(processes, etcd, started)
    started.stop()


@pytest.fixture
async def client(front) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=front.url, timeout=10.0) as http:
        await wait_ready(http)
        await prime_csrf(http)
        yield http


async def wait_ready(client: httpx.AsyncClient) -> None:
    await poll_until(lambda: client.get("/readyz"), lambda r: r.status_code == 200)


async def log_in(client: httpx.AsyncClient, username: str, password: str):
    return await client.post(
        "/api/login", json={"username": username, "password": password}
    )


async def test_wrong_passwords_get_429(client):
    await client.post("/api/users", json={"username": "ada", "password": PASSWORD})

    replies = [await log_in(client, "ada", "wrong password") for _ in range(20)]
    correct = await log_in(client, "ada", PASSWORD)

    assert [r.status_code for r in replies] == [401] * 5 + [429] * 15
    for reply in replies[5:]:
        assert 1 <= int(reply.headers["retry-after"]) <= 60
        assert reply.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert correct.status_code == 429


async def test_unknown_user_and_wrong_password_look_alike(client):
    await client.post("/api/users", json={"username": "bob", "password": PASSWORD})

    unknown = await log_in(client, "nobody", PASSWORD)
    wrong = await log_in(client, "bob", "wrong password")

    assert unknown.status_code == 401
    assert wrong.status_code == unknown.status_code
    assert wrong.content == unknown.content
    assert sorted(wrong.headers.keys()) == sorted(unknown.headers.keys())
    for name in wrong.headers:
        if name != "date":
            assert wrong.headers[name] == unknown.headers[name], name


async def test_post_without_csrf_token_is_refused(client):
    token = client.headers.pop(CSRF_HEADER)

    refused = await client.post("/api/counters/clicks/increment", json={})
    accepted = await client.post(
        "/api/counters/clicks/increment", json={}, headers={CSRF_HEADER: token}
    )
    read = await client.get("/api/counters/clicks")

    assert refused.status_code == 403
    assert CSRF_HEADER in refused.json()["error"]["message"]
    assert accepted.status_code == 200
    assert read.json()["counter"]["value"] == 1


async def test_secrets_stay_out_of_logs(client, front, processes):
    account = {"username": "carol", "password": PASSWORD}
    await client.post("/api/users", json=account)
    login = await client.post("/api/login", json=account)
    token = client.cookies["mesh_session"]
    await client.get("/api/me")
    await log_in(client, "carol", "another wrong one")
    await client.post("/api/logout")
    front.stop()
    processes.stop_all()

    logs = {front.log_path.name: front.log_path.read_text()}
    logs.update({p.log_path.name: p.log_text() for p in processes.started})
    assert login.status_code == 200
    assert "POST /api/login" in logs["front.log"]
    for name, text in logs.items():
        for secret in (PASSWORD, token, "another wrong one"):
            assert secret not in text, f"{secret!r} found in {name}"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"chromium not installed at {CHROMIUM}")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()


async def open_page(browser: Browser, url: str, problems: list[str]) -> Page:
    """Open url, recording console errors: CSP violations are among them."""
    # The HTTPS front's certificate comes from a CA that Chromium does not
    # know, so the context skips the check that httpx does with the CA file.
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        # An anonymous visitor's GET /api/me gets 401 on purpose.
        expected = message.location.get("url", "").endswith("/api/me")
        if message.type == "error" and not expected:
            problems.append(message.text)

    page.on("console", on_console)
    await page.goto(url)
    return page


async def sign_up_and_click(page: Page) -> None:
    form = page.locator("#signup-form")
    await form.locator("input[name=username]").fill("grace")
    await form.locator("input[name=password]").fill(PASSWORD)
    await form.locator("button[type=submit]").click()
    await expect(page.locator("#personal-value")).to_have_text(
        "0", timeout=EXPECT_TIMEOUT_MS
    )
    await page.locator("#personal-increment").click()
    await expect(page.locator("#personal-value")).to_have_text(
        "1", timeout=EXPECT_TIMEOUT_MS
    )


def cookies_by_name(cookies) -> dict[str, Any]:
    return {cookie["name"]: cookie for cookie in cookies}


@pytest.mark.browser
async def test_browser_cookie_flags_and_csp(browser, front):
    problems: list[str] = []
    page = await open_page(browser, front.url, problems)

    await sign_up_and_click(page)
    cookies = cookies_by_name(await page.context.cookies())
    inline_ran = await page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.inlineRan = true;";
            document.head.append(script);
            return window.inlineRan === true;
        }"""
    )

    session = cookies["mesh_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    assert session["secure"] is False
    assert cookies[CSRF_COOKIE]["httpOnly"] is False
    assert cookies[CSRF_COOKIE]["sameSite"] == "Strict"
    # The injected inline script is blocked, and Chromium reports it.
    assert inline_ran is False
    assert len(problems) == 1
    assert "Content Security Policy" in problems[0]


@pytest.mark.browser
async def test_browser_docs_page_under_csp(browser, front):
    problems: list[str] = []

    page = await open_page(browser, f"{front.url}/docs", problems)

    await expect(page.locator(".opblock").first).to_be_visible(
        timeout=EXPECT_TIMEOUT_MS
    )
    assert problems == []


@pytest.fixture
def certs(tmp_path) -> Path:
    directory: Path = tmp_path / "certs"
    init_certs(CertsOptions(directory))
    return directory


@pytest.fixture
async def tls_front(
    mesh_config, etcd, processes, tmp_path, certs
) -> AsyncIterator[FrontProcess]:
    paths = identity_paths(certs, "front")
    started = FrontProcess(
        mesh_config, tmp_path / "front-tls.log", tls=(paths.cert, paths.key, paths.ca)
    )
    yield await start_mesh(processes, etcd, started)
    started.stop()


@pytest.mark.browser
async def test_browser_cookies_secure_over_tls(browser, tls_front):
    problems: list[str] = []
    page = await open_page(browser, tls_front.url, problems)

    await sign_up_and_click(page)
    cookies = cookies_by_name(await page.context.cookies())

    assert tls_front.url.startswith("https://")
    assert cookies["mesh_session"]["secure"] is True
    assert cookies["mesh_session"]["httpOnly"] is True
    assert cookies["mesh_session"]["sameSite"] == "Lax"
    assert cookies[CSRF_COOKIE]["secure"] is True
    assert problems == []
