"""The health checks of docker-compose.yml, run against real processes.

Inside a container each check dials a fixed port on 127.0.0.1. Here the
address in the check is replaced by the test process's address.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from registry.cli_common import COUNTER_SERVICE
from registry.etcd_process import free_port, port_is_open
from tests.integration.service_process import ServiceProcesses
from tests.unit.test_compose import SERVICES

pytestmark = pytest.mark.integration

ETCDCTL = Path(sys.executable).parent / "etcdctl"


def healthcheck(service: str, replacements: dict[str, str]) -> list[str]:
    test = list(SERVICES[service]["healthcheck"]["test"][1:])
    for old, new in replacements.items():
        test = [part.replace(old, new) for part in test]
    if test[0] == "python":
        test[0] = sys.executable
    return test


async def run_check(argv: list[str]) -> int:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    async with asyncio.timeout(30):
        return await process.wait()


async def test_etcd_check_passes_on_live_member(etcd_server):
    argv = healthcheck(
        "etcd1",
        {
            "/usr/local/bin/etcdctl": str(ETCDCTL),
            "http://127.0.0.1:2379": etcd_server.client_url,
        },
    )

    assert await run_check(argv) == 0


async def test_etcd_check_fails_without_member():
    url = f"http://127.0.0.1:{free_port()}"
    argv = healthcheck(
        "etcd1",
        {"/usr/local/bin/etcdctl": str(ETCDCTL), "http://127.0.0.1:2379": url},
    )

    assert await run_check(argv) != 0


async def test_service_check_follows_serving_state(etcd, mesh_config, tmp_path):
    processes = ServiceProcesses(mesh_config, tmp_path)
    # A long drain delay keeps the process reporting NOT_SERVING while the
    # check runs.
    started = await processes.start(
        etcd, "counter_svc", COUNTER_SERVICE, {"MESH_DRAIN_DELAY": "3"}
    )
    argv = healthcheck("counter_svc", {"127.0.0.1:50051": started.address})
    try:
        serving = await run_check(argv)
        assert started.process is not None
        started.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        draining = await run_check(argv)
    finally:
        processes.stop_all()
    closed = await run_check(argv)

    assert serving == 0
    assert draining == 1
    assert closed != 0


def start_edge(module: str, port: int, config, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["MESH_ETCD_ENDPOINTS"] = ",".join(config.endpoint_urls)
    env["MESH_NAMESPACE"] = config.namespace
    env["MESH_BIND_HOST"] = "127.0.0.1"
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(port)],
            env=env,
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
    service, module, address, mesh_config, tmp_path
):
    port = free_port()
    edge = start_edge(module, port, mesh_config, tmp_path / f"{service}.log")
    argv = healthcheck(service, {address: f"127.0.0.1:{port}"})
    try:
        async with asyncio.timeout(30):
            while not port_is_open("127.0.0.1", port, timeout=0.2):
                await asyncio.sleep(0.1)
        running = await run_check(argv)
    finally:
        edge.terminate()
        edge.wait(timeout=15)
    stopped = await run_check(argv)

    assert running == 0, (tmp_path / f"{service}.log").read_text()
    assert stopped != 0
