"""Failed-login limits per username and per client address, on a fake clock."""

from __future__ import annotations

import httpx
import pytest

from front.login_limits import (
    LoginLimiter,
    LoginLimits,
    SlidingWindow,
    TooManyLoginsError,
)
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


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


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


@pytest.fixture
async def client(mesh, clock):
    app = app_with(mesh, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://front.test") as http,
    ):
        await prime_csrf(http)
        await http.post("/api/users", json={"username": "ada", "password": PASSWORD})
        yield http


async def log_in(
    client: httpx.AsyncClient, username: str, password: str
) -> httpx.Response:
    return await client.post(
        "/api/login", json={"username": username, "password": password}
    )


def test_window_counts_recent_events(clock):
    window = SlidingWindow(60.0, clock)
    window.add("k")
    clock.advance(30)
    window.add("k")

    assert window.count("k") == 2
    assert window.wait_time("k", 2) == 30.0
    assert window.wait_time("k", 3) == 0.0
    clock.advance(30)
    assert window.count("k") == 1
    clock.advance(30)
    assert window.count("k") == 0
    assert len(window) == 0


def test_window_bounds_tracked_keys(clock):
    window = SlidingWindow(60.0, clock, max_keys=3)
    for key in ("a", "b", "c"):
        window.add(key)

    window.add("d")

    assert len(window) == 3
    assert window.count("a") == 0
    assert window.count("d") == 1


def test_window_drops_expired_keys_first(clock):
    window = SlidingWindow(60.0, clock, max_keys=2)
    window.add("old")
    clock.advance(50)
    window.add("recent")
    clock.advance(20)

    window.add("new")

    assert window.count("recent") == 1
    assert window.count("new") == 1


def test_limiter_counts_attempt_until_settled(clock):
    limiter = LoginLimiter(LoginLimits(per_user=2, per_address=10), clock)

    first = limiter.start("ada", "10.0.0.1")
    limiter.start("ada", "10.0.0.1")
    with pytest.raises(TooManyLoginsError) as error:
        limiter.start("ADA", "10.0.0.1")

    assert error.value.retry_after == 60
    first.cancelled()
    limiter.start("ada", "10.0.0.1")


async def test_sixth_wrong_password_gets_429(client):
    replies = [await log_in(client, "ada", "wrong password") for _ in range(6)]

    assert [r.status_code for r in replies] == [401] * 5 + [429]
    limited = replies[-1]
    assert limited.headers["retry-after"] == "60"
    assert limited.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert "for this user" in limited.json()["error"]["message"]


async def test_limited_user_is_rejected_with_right_password(client):
    for _ in range(5):
        await log_in(client, "ada", "wrong password")

    response = await log_in(client, "ada", PASSWORD)

    assert response.status_code == 429
    assert "set-cookie" not in response.headers


async def test_retry_after_counts_down(client, clock):
    for _ in range(5):
        await log_in(client, "ada", "wrong password")
        clock.advance(10)

    # The first failure is 50 s old, so it expires in 10 s.
    response = await log_in(client, "ada", PASSWORD)
    clock.advance(10)
    later = await log_in(client, "ada", PASSWORD)

    assert response.headers["retry-after"] == "10"
    assert later.status_code == 200


async def test_address_limit_spans_usernames(client):
    replies = [
        await log_in(client, f"user{number:02d}", "wrong password")
        for number in range(21)
    ]

    assert [r.status_code for r in replies] == [401] * 20 + [429]
    assert "from this address" in replies[-1].json()["error"]["message"]
    assert int(replies[-1].headers["retry-after"]) == 60


async def test_success_forgets_user_failures(client):
    for _ in range(4):
        await log_in(client, "ada", "wrong password")
    await log_in(client, "ada", PASSWORD)

    replies = [await log_in(client, "ada", "wrong password") for _ in range(5)]

    assert [r.status_code for r in replies] == [401] * 5


async def test_backend_outage_is_not_a_failure(client, mesh):
    mesh.resolver(USER).set_endpoints([])
    outages = [await log_in(client, "ada", "wrong password") for _ in range(6)]
    mesh.resolver(USER).set_endpoints(list(mesh.resolver(COUNTER).snapshot().values()))

    response = await log_in(client, "ada", PASSWORD)

    assert {r.status_code for r in outages} == {503}
    assert response.status_code == 200
