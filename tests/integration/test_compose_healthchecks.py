"""The health checks of docker-compose.yml, run against real processes.

Inside a container each check dials a fixed port on 127.0.0.1 and reads the
certificates under /certs. Here the address in the check is replaced by the
test process's address, and /certs by the test's certificate folder. The
Compose file runs in secure mode, so etcd and the processes run with TLS and
auth as there (tests/security/secure_mesh.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.certs import ADMIN_IDENTITY, COUNTER_IDENTITY
from registry.cli_common import COUNTER_SERVICE
from registry.etcd import EtcdClient
from registry.etcd_process import free_port, port_is_open
from tests.integration.service_process import ServiceProcesses
from tests.security.secure_mesh import SecureMesh
from tests.unit.test_compose import SERVICES

pytestmark = pytest.mark.integration

ETCDCTL = Path(sys.executable).parent / "etcdctl"


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[SecureMesh]:
    mesh = SecureMesh(tmp_path / "secure")
    await mesh.start()
    yield mesh
    mesh.stop()


def healthcheck(
    service: str, replacements: dict[str, str], secure: SecureMesh
) -> list[str]:
    test = list(SERVICES[service]["healthcheck"]["test"][1:])
    for old, new in {**replacements, "/certs/": f"{secure.certs}/"}.items():
        test = [part.replace(old, new) for part in test]
    if test[0] == "python":
        test[0] = sys.executable
    return test


async def run_check(argv: list[str], env: dict[str, str] | None = None) -> int:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(30):
        return await process.wait()


async def test_etcd_check_passes_on_live_member(secure):
    argv = healthcheck(
        "etcd1",
        {
            "/usr/local/bin/etcdctl": str(ETCDCTL),
            "https://127.0.0.1:2379": secure.etcd.client_url,
        },
        secure,
    )

    assert await run_check(argv) == 0


async def test_etcd_check_fails_without_member(secure):
    url = f"https://127.0.0.1:{free_port()}"
    argv = healthcheck(
        "etcd1",
        {"/usr/local/bin/etcdctl": str(ETCDCTL), "https://127.0.0.1:2379": url},
        secure,
    )

    assert await run_check(argv) != 0


async def test_service_check_follows_serving_state(secure, tmp_path):
    processes = ServiceProcesses(secure.config(COUNTER_IDENTITY), tmp_path)
    env = secure.service_env(COUNTER_IDENTITY)
    async with EtcdClient(secure.config(ADMIN_IDENTITY)) as admin:
        # A long drain delay keeps the process reporting NOT_SERVING while
        # the check runs.
        started = await processes.start(
            admin, "counter_svc", COUNTER_SERVICE, {**env, "MESH_DRAIN_DELAY": "3"}
        )
    argv = healthcheck("counter_svc", {"127.0.0.1:50051": started.address}, secure)
    try:
        serving = await run_check(argv, env)
        assert started.process is not None
        started.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        draining = await run_check(argv, env)
    finally:
        processes.stop_all()
    closed = await run_check(argv, env)

    assert serving == 0
    assert draining == 1
    assert closed != 0


def start_edge(
    module: str, port: int, secure: SecureMesh, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    config = secure.config(None)
    child = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    child["MESH_ETCD_ENDPOINTS"] = ",".join(config.endpoint_urls)
    child["MESH_NAMESPACE"] = config.namespace
    child["MESH_BIND_HOST"] = "127.0.0.1"
    child.update(env)
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(port)],
            env=child,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize(
    ("service", "module", "address"),
    [
        ("front", "front", "127.0.0.1:8080"),
        ("ingress", "registry.ingress", "127.0.0.1:50051"),
    ],
)
async def test_edge_check_passes_while_running(
    service, module, address, secure, tmp_path
):
    port = free_port()
    env = secure.service_env(service)
    log = tmp_path / f"{service}.log"
    edge = start_edge(module, port, secure, env, log)
    argv = healthcheck(service, {address: f"127.0.0.1:{port}"}, secure)
    try:
        async with asyncio.timeout(30):
            while not port_is_open("127.0.0.1", port, timeout=0.2):
                await asyncio.sleep(0.1)
        running = await run_check(argv, env)
    finally:
        edge.terminate()
        edge.wait(timeout=15)
    stopped = await run_check(argv, env)

    assert running == 0, log.read_text()
    assert stopped != 0
