"""The front's JSON API against in-process gRPC fakes, through a real MeshChannel."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.integration.front_server import prime_csrf
from tests.unit.front_fakes import (
    COUNTER,
    USER,
    Backend,
    FakeMesh,
    app_with,
    fake_config,
)


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
async def client(mesh):
    app = app_with(mesh)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://front.test") as http,
    ):
        await prime_csrf(http)
        yield http


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text
    return str(body["error"]["message"])


async def test_increment_returns_value_and_instance(client, backend):
    first = await client.post("/api/counters/clicks/increment", json={"delta": 2})
    second = await client.post("/api/counters/clicks/increment", json={})

    assert first.status_code == 200
    assert first.json() == {
        "counter": {"name": "clicks", "value": 2},
        "instance": "fake-1",
    }
    assert second.json()["counter"]["value"] == 3
    assert backend.counters.values == {"clicks": 3}


async def test_increment_sends_a_request_id(client, backend):
    await client.post("/api/counters/clicks/increment", json={})
    await client.post("/api/counters/clicks/increment", json={"request_id": "mine-1"})

    generated, given = backend.counters.requests
    assert re.fullmatch(r"[0-9a-f]{32}", generated.request_id)
    assert given.request_id == "mine-1"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"delta": 0}, "delta"),
        ({"delta": 1_000_001}, "delta"),
        ({"delta": "many"}, "delta"),
        ({"request_id": "has space"}, "request_id"),
    ],
)
async def test_increment_rejects_bad_body(client, backend, body, field):
    response = await client.post("/api/counters/clicks/increment", json=body)

    message = assert_error(response, 400, "INVALID_ARGUMENT")
    assert f"invalid {field}" in message
    assert backend.counters.requests == []


async def test_increment_rejects_bad_name(client):
    response = await client.post("/api/counters/no%20spaces/increment", json={})

    message = assert_error(response, 400, "INVALID_ARGUMENT")
    assert "invalid name" in message


async def test_get_counter_of_unknown_name_is_zero(client):
    response = await client.get("/api/counters/never")

    assert response.status_code == 200
    assert response.json()["counter"] == {"name": "never", "value": 0}


async def test_list_counters_returns_page(client):
    await client.post("/api/counters/b/increment", json={})
    await client.post("/api/counters/a/increment", json={"delta": 5})

    response = await client.get("/api/counters", params={"page_size": 10})

    assert response.status_code == 200
    assert response.json() == {
        "counters": [{"name": "a", "value": 5}, {"name": "b", "value": 1}],
        "next_page_token": "",
    }


async def test_backend_invalid_argument_becomes_400(client):
    response = await client.get("/api/counters", params={"page_token": "garbage"})

    message = assert_error(response, 400, "INVALID_ARGUMENT")
    assert message.startswith("page_token:")


async def test_list_counters_rejects_page_size(client):
    response = await client.get("/api/counters", params={"page_size": 1001})

    message = assert_error(response, 400, "INVALID_ARGUMENT")
    assert "invalid page_size" in message


async def test_no_endpoint_gives_503(client, mesh):
    mesh.resolver(COUNTER).set_endpoints([])

    response = await client.post("/api/counters/clicks/increment", json={})

    message = assert_error(response, 503, "UNAVAILABLE")
    assert COUNTER in message
    assert "/unit" in message


async def test_stopped_backend_gives_503(client, backend):
    await backend.stop()

    response = await client.get("/api/counters/clicks")

    assert_error(response, 503, "UNAVAILABLE")


async def test_unknown_route_gives_json_404(client):
    response = await client.get("/api/nothing-here")

    assert_error(response, 404, "NOT_FOUND")


async def test_sign_up_login_and_me(client):
    created = await client.post(
        "/api/users", json={"username": "ada", "password": "correct horse"}
    )
    login = await client.post(
        "/api/login", json={"username": "ada", "password": "correct horse"}
    )
    me = await client.get("/api/me")

    assert created.status_code == 201
    assert created.json()["counter"] == "user.ada"
    assert login.status_code == 200
    cookie = login.headers["set-cookie"].lower()
    assert cookie.startswith("mesh_session=")
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "session_token" not in login.text
    assert me.status_code == 200
    assert me.json()["user"]["username"] == "ada"


async def test_duplicate_user_gives_409(client):
    body = {"username": "ada", "password": "correct horse"}
    await client.post("/api/users", json=body)

    response = await client.post("/api/users", json=body)

    message = assert_error(response, 409, "ALREADY_EXISTS")
    assert "username" in message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "Ada", "password": "correct horse"}, "username"),
        ({"username": "ada", "password": "short"}, "password"),
        ({"username": "ada"}, "password"),
    ],
)
async def test_sign_up_rejects_bad_body(client, body, field):
    response = await client.post("/api/users", json=body)

    message = assert_error(response, 400, "INVALID_ARGUMENT")
    assert f"invalid {field}" in message


async def test_wrong_password_gives_401(client):
    await client.post(
        "/api/users", json={"username": "ada", "password": "correct horse"}
    )

    response = await client.post(
        "/api/login", json={"username": "ada", "password": "wrong horse"}
    )

    assert_error(response, 401, "UNAUTHENTICATED")
    assert "set-cookie" not in response.headers


async def test_me_without_session_gives_401(client):
    response = await client.get("/api/me")

    message = assert_error(response, 401, "UNAUTHENTICATED")
    assert "/api/login" in message


async def test_logout_ends_session(client, backend):
    await client.post(
        "/api/users", json={"username": "ada", "password": "correct horse"}
    )
    await client.post(
        "/api/login", json={"username": "ada", "password": "correct horse"}
    )
    token = client.cookies["mesh_session"]

    response = await client.post("/api/logout")
    client.cookies.set("mesh_session", token)
    me = await client.get("/api/me")

    assert response.status_code == 204
    assert backend.users.sessions == {}
    assert_error(me, 401, "UNAUTHENTICATED")


async def test_personal_counter_needs_its_owner(client):
    for name in ("ada", "bob"):
        await client.post(
            "/api/users", json={"username": name, "password": "correct horse"}
        )
    anonymous = await client.post("/api/counters/user.ada/increment", json={})
    await client.post(
        "/api/login", json={"username": "bob", "password": "correct horse"}
    )

    other = await client.post("/api/counters/user.ada/increment", json={})
    own = await client.post("/api/counters/user.bob/increment", json={})

    assert_error(anonymous, 401, "UNAUTHENTICATED")
    message = assert_error(other, 403, "PERMISSION_DENIED")
    assert "user.bob" in message
    assert own.status_code == 200
    assert own.json()["counter"]["value"] == 1


async def test_readyz_is_200_with_backends(client):
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"ready": True, "missing": []}


async def test_readyz_names_missing_service(client, mesh):
    mesh.resolver(USER).set_endpoints([])

    response = await client.get("/readyz")

    assert response.status_code == 503
    missing = response.json()["missing"]
    assert len(missing) == 1
    assert missing[0].startswith(USER)


async def test_readyz_names_unreachable_etcd(client, mesh):
    mesh.etcd.up = False

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["missing"][0].startswith("etcd:")


async def test_healthz_is_200(client, mesh):
    mesh.etcd.up = False

    response = await client.get("/healthz")

    assert response.status_code == 200


async def test_mesh_lists_instances_and_calls(client):
    await client.post("/api/counters/clicks/increment", json={})
    await client.post("/api/counters/clicks/increment", json={})

    response = await client.get("/api/mesh")

    assert response.status_code == 200
    body = response.json()
    assert body["namespace"] == "/unit"
    services = {service["name"]: service for service in body["services"]}
    assert set(services) == {COUNTER, USER}
    (instance,) = services[COUNTER]["instances"]
    assert instance["instance_id"] == "fake-1"
    assert instance["version"] == "9.9.9"
    assert instance["calls"] == 2
    assert instance["age_seconds"] >= 5


async def test_mesh_with_etcd_down_gives_503(client, mesh):
    mesh.etcd.up = False

    response = await client.get("/api/mesh")

    assert_error(response, 503, "UNAVAILABLE")


async def test_openapi_documents_400_not_422(client):
    response = await client.get("/openapi.json")

    operation = response.json()["paths"]["/api/counters/{name}/increment"]["post"]
    assert "400" in operation["responses"]
    assert "422" not in operation["responses"]


async def test_pages_load_only_own_resources(client):
    index = await client.get("/")
    mesh_page = await client.get("/mesh")
    script = await client.get("/static/counters.js")

    assert index.status_code == 200
    assert "default-src 'self'" in index.headers["content-security-policy"]
    assert 'id="shared-value"' in index.text
    assert mesh_page.status_code == 200
    assert script.status_code == 200
    for page in (index.text, mesh_page.text, script.text):
        assert "http://" not in page
        assert "https://" not in page


async def test_broken_cookie_means_logged_out(client, backend):
    client.cookies.set("mesh_session", "x" * 200)

    me = await client.get("/api/me")
    logout = await client.post("/api/logout")

    message = assert_error(me, 401, "UNAUTHENTICATED")
    assert "log in again" in message
    assert logout.status_code == 204
    assert "mesh_session=" in logout.headers["set-cookie"]
