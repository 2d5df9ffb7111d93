"""Headless Chromium on the front's pages, with real etcd and service processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    async_playwright,
    expect,
)

from counter_svc import SERVICE_NAME as COUNTER
from tests.integration.front_server import FrontProcess
from tests.integration.service_process import ServiceProcesses
from user_svc import SERVICE_NAME as USER

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# How long an expectation waits for the page, in milliseconds. A live page
# updates within a second, and the margin is for slow CI machines.
EXPECT_TIMEOUT_MS = 15_000
# What the page shows until it has a value: an en dash.
PLACEHOLDER = "\u2013"


@pytest.fixture
async def browser():
    if not CHROMIUM.exists():
        pytest.skip(
            f"chromium not installed at {CHROMIUM}: make test installs it with "
            "apt when run as root"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()


@pytest.fixture
async def mesh_up(mesh_config, etcd, tmp_path):
    """Two counter replicas, one user replica and a front, all real processes."""
    processes = ServiceProcesses(mesh_config, tmp_path)
    front = FrontProcess(mesh_config, tmp_path / "front.log")
    try:
        counters = [
            await processes.start(etcd, "counter_svc", COUNTER),
            await processes.start(etcd, "counter_svc", COUNTER),
        ]
        await processes.start(etcd, "user_svc", USER)
        await front.start()
        yield front, counters
    finally:
        if front.process is not None:
            front.stop()
        processes.stop_all()


async def open_page(browser: Browser, url: str, problems: list[str]) -> Page:
    """Open url in a fresh context, recording console errors and foreign requests."""
    context = await browser.new_context()
    page = await context.new_page()
    origin = url.split("/", 3)[:3]

    def on_console(message: ConsoleMessage) -> None:
        # An anonymous visitor's GET /api/me gets 401 on purpose, and
        # Chromium logs every failed response as a console error.
        expected = message.location.get("url", "").endswith("/api/me")
        if message.type == "error" and not expected:
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on(
        "request",
        lambda request: (
            problems.append(f"foreign request: {request.url}")
            if request.url.split("/", 3)[:3] != origin
            else None
        ),
    )
    await page.goto(url)
    return page


async def test_counter_page_updates_every_browser(browser, mesh_up, tmp_path):
    front, counters = mesh_up
    problems: list[str] = []
    clicker = await open_page(browser, front.url, problems)
    watcher = await open_page(browser, front.url, problems)
    value = clicker.locator("#shared-value")
    await expect(value).to_have_text("0", timeout=EXPECT_TIMEOUT_MS)
    await expect(watcher.locator("#shared-value")).to_have_text(
        "0", timeout=EXPECT_TIMEOUT_MS
    )

    await clicker.locator("#shared-increment").click()

    await expect(value).to_have_text("1", timeout=EXPECT_TIMEOUT_MS)
    await expect(watcher.locator("#shared-value")).to_have_text(
        "1", timeout=EXPECT_TIMEOUT_MS
    )
    served_by = clicker.locator("#shared-served-by")
    await expect(served_by).not_to_have_text(PLACEHOLDER, timeout=EXPECT_TIMEOUT_MS)
    assert await served_by.text_content() in {c.instance_id for c in counters}
    await clicker.screenshot(path=str(tmp_path / "index.png"), full_page=True)
    assert problems == []


async def test_sign_up_shows_personal_counter(browser, mesh_up, tmp_path):
    front, _ = mesh_up
    problems: list[str] = []
    page = await open_page(browser, front.url, problems)
    form = page.locator("#signup-form")
    await form.locator("input[name=username]").fill("grace")
    await form.locator("input[name=password]").fill("correct horse")

    await form.locator("button[type=submit]").click()

    personal = page.locator("#personal")
    await expect(personal).to_be_visible(timeout=EXPECT_TIMEOUT_MS)
    await expect(page.locator("#username")).to_have_text("grace")
    await expect(personal.locator(".counter-name")).to_have_text("user.grace")
    await expect(page.locator("#personal-value")).to_have_text(
        "0", timeout=EXPECT_TIMEOUT_MS
    )
    await page.locator("#personal-increment").click()
    await expect(page.locator("#personal-value")).to_have_text(
        "1", timeout=EXPECT_TIMEOUT_MS
    )
    await expect(page.locator("#shared-value")).to_have_text("0")
    await page.screenshot(path=str(tmp_path / "signed-in.png"), full_page=True)
    await page.locator("#logout").click()
    await expect(personal).to_be_hidden(timeout=EXPECT_TIMEOUT_MS)
    assert problems == []


async def test_mesh_page_shows_two_counter_instances(browser, mesh_up, tmp_path):
    front, counters = mesh_up
    problems: list[str] = []

    page = await open_page(browser, f"{front.url}/mesh", problems)

    section = page.locator(f'section[data-service="{COUNTER}"]')
    rows = section.locator("tr.instance")
    await expect(rows).to_have_count(2, timeout=EXPECT_TIMEOUT_MS)
    shown_ids = {await row.get_attribute("data-instance") for row in await rows.all()}
    assert shown_ids == {c.instance_id for c in counters}
    for counter in counters:
        await expect(section).to_contain_text(counter.address)
    await expect(
        page.locator(f'section[data-service="{USER}"] tr.instance')
    ).to_have_count(1)
    await page.screenshot(path=str(tmp_path / "mesh.png"), full_page=True)
    assert problems == []
