"""The front as a real process, on a real etcd, with real service processes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from counter_svc import SERVICE_NAME as COUNTER
from tests.integration.front_server import (
    FrontProcess,
    next_matching,
    poll_until,
    prime_csrf,
    sse_events,
)
from tests.integration.service_process import ServiceProcesses
from user_svc import SERVICE_NAME as USER

pytestmark = pytest.mark.integration

# Maximum wait for one SSE event, in seconds. A live stream sends within a second.
EVENT_TIMEOUT = 15.0


@pytest.fixture
def processes(mesh_config, tmp_path):
    started = ServiceProcesses(mesh_config, tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
async def front(mesh_config, tmp_path):
    process = FrontProcess(mesh_config, tmp_path / "front.log")
    await process.start()
    yield process
    process.stop()


@pytest.fixture
async def client(front):
    async with httpx.AsyncClient(base_url=front.url, timeout=10.0) as http:
        await prime_csrf(http)
        yield http


def assert_json_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert error["code"] == code
    return str(error["message"])


async def readiness(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/readyz")


async def test_front_serves_once_backends_register(client, processes, etcd):
    health = await client.get("/healthz")
    not_ready = await client.get("/readyz")
    no_backend = await client.post("/api/counters/clicks/increment", json={})

    assert health.status_code == 200
    assert not_ready.status_code == 503
    missing = not_ready.json()["missing"]
    assert [line.split(":")[0] for line in missing] == [COUNTER, USER]
    message = assert_json_error(no_backend, 503, "UNAVAILABLE")
    assert COUNTER in message

    counter = await processes.start(etcd, "counter_svc", COUNTER)
    await processes.start(etcd, "user_svc", USER)
    ready = await poll_until(lambda: readiness(client), lambda r: r.status_code == 200)
    first = await client.post("/api/counters/clicks/increment", json={"delta": 5})
    second = await client.post("/api/counters/clicks/increment", json={})
    read = await client.get("/api/counters/clicks")

    assert ready.json() == {"ready": True, "missing": []}
    assert first.status_code == 200, first.text
    assert first.json() == {
        "counter": {"name": "clicks", "value": 5},
        "instance": counter.instance_id,
    }
    assert second.json()["counter"]["value"] == 6
    assert read.json()["counter"]["value"] == 6


async def test_bad_input_gives_400_naming_field(client, processes, etcd):
    await processes.start(etcd, "counter_svc", COUNTER)

    zero = await client.post("/api/counters/clicks/increment", json={"delta": 0})
    bad_name = await client.post("/api/counters/bad%21name/increment", json={})
    bad_token = await client.get("/api/counters", params={"page_token": "garbage"})

    assert "delta" in assert_json_error(zero, 400, "INVALID_ARGUMENT")
    assert "name" in assert_json_error(bad_name, 400, "INVALID_ARGUMENT")
    # The front cannot check a page token, so this message comes from the
    # service's INVALID_ARGUMENT.
    assert "page_token" in assert_json_error(bad_token, 400, "INVALID_ARGUMENT")


async def test_sessions_through_user_service(client, processes, etcd):
    await processes.start(etcd, "counter_svc", COUNTER)
    await processes.start(etcd, "user_svc", USER)
    account = {"username": "ada", "password": "correct horse"}

    created = await client.post("/api/users", json=account)
    duplicate = await client.post("/api/users", json=account)
    wrong = await client.post("/api/login", json={**account, "password": "wrong one"})
    login = await client.post("/api/login", json=account)
    me = await client.get("/api/me")
    personal = await client.post("/api/counters/user.ada/increment", json={})
    logout = await client.post("/api/logout")
    after = await client.get("/api/me")

    assert created.status_code == 201, created.text
    assert_json_error(duplicate, 409, "ALREADY_EXISTS")
    assert_json_error(wrong, 401, "UNAUTHENTICATED")
    assert login.status_code == 200, login.text
    assert "httponly" in login.headers["set-cookie"].lower()
    assert me.json()["user"]["counter"] == "user.ada"
    assert personal.json()["counter"] == {"name": "user.ada", "value": 1}
    assert logout.status_code == 204
    assert_json_error(after, 401, "UNAUTHENTICATED")


async def test_counter_events_deliver_new_value(front, client, processes, etcd):
    await processes.start(etcd, "counter_svc", COUNTER)
    await processes.start(etcd, "counter_svc", COUNTER)
    url = f"{front.url}/api/counters/live/events"

    async with (
        httpx.AsyncClient(timeout=EVENT_TIMEOUT) as first_client,
        httpx.AsyncClient(timeout=EVENT_TIMEOUT) as second_client,
        first_client.stream("GET", url) as first,
        second_client.stream("GET", url) as second,
    ):
        assert first.headers["content-type"].startswith("text/event-stream")
        first_events = sse_events(first)
        second_events = sse_events(second)
        async with asyncio.timeout(EVENT_TIMEOUT):
            initial = await next_matching(first_events, lambda n, _: n == "value")
            await next_matching(second_events, lambda n, _: n == "value")
            reply = await client.post("/api/counters/live/increment", json={"delta": 3})
            seen_first = await next_matching(
                first_events, lambda n, d: n == "value" and d["value"] == 3
            )
            seen_second = await next_matching(
                second_events, lambda n, d: n == "value" and d["value"] == 3
            )

    assert initial["value"] == 0
    assert reply.json()["counter"]["value"] == 3
    assert seen_first["name"] == "live"
    assert seen_second["revision"] == seen_first["revision"]


async def test_counter_events_survive_replica_stop(front, client, processes, etcd):
    first = await processes.start(etcd, "counter_svc", COUNTER)
    url = f"{front.url}/api/counters/resilient/events"

    async with (
        httpx.AsyncClient(timeout=EVENT_TIMEOUT) as stream_client,
        stream_client.stream("GET", url) as stream,
    ):
        events = sse_events(stream)
        async with asyncio.timeout(EVENT_TIMEOUT):
            await next_matching(events, lambda n, _: n == "value")
            await processes.start(etcd, "counter_svc", COUNTER)
            first.stop()
            interrupted = await next_matching(events, lambda n, _: n == "unavailable")
            reply = await client.post(
                "/api/counters/resilient/increment", json={"delta": 4}
            )
            resumed = await next_matching(
                events, lambda n, d: n == "value" and d["value"] == 4
            )

    assert interrupted["message"]
    assert reply.status_code == 200
    assert resumed["name"] == "resilient"


async def test_mesh_view_follows_instances(front, client, processes, etcd):
    first = await processes.start(etcd, "counter_svc", COUNTER)
    url = f"{front.url}/api/mesh/events"

    def counter_ids(snapshot) -> set[str]:
        services = {s["name"]: s for s in snapshot["services"]}
        return {i["instance_id"] for i in services[COUNTER]["instances"]}

    async with (
        httpx.AsyncClient(timeout=EVENT_TIMEOUT) as stream_client,
        stream_client.stream("GET", url) as stream,
    ):
        events = sse_events(stream)
        async with asyncio.timeout(EVENT_TIMEOUT):
            await next_matching(
                events, lambda _, d: counter_ids(d) == {first.instance_id}
            )
            second = await processes.start(etcd, "counter_svc", COUNTER)
            both = await next_matching(events, lambda _, d: len(counter_ids(d)) == 2)
            first.stop()
            remaining = await next_matching(
                events, lambda _, d: len(counter_ids(d)) == 1
            )

    listing = await client.get("/api/mesh")

    assert counter_ids(both) == {first.instance_id, second.instance_id}
    assert counter_ids(remaining) == {second.instance_id}
    assert counter_ids(listing.json()) == {second.instance_id}
    services = {s["name"]: s for s in listing.json()["services"]}
    (instance,) = services[COUNTER]["instances"]
    assert instance["address"] == second.address
    assert instance["age_seconds"] >= 0
