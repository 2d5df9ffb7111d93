"""meshctl as a real process against a real etcd and real services."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio
import httpx
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from registry.cli_common import COUNTER_SERVICE, USER_SERVICE
from registry.config import MeshConfig
from registry.etcd import EtcdClient
from registry.etcd_process import EtcdProcess, free_port, port_is_open
from registry.model import InstanceInfo, encode_record
from tests.integration.service_process import ServiceProcesses

pytestmark = pytest.mark.integration

MESHCTL = Path(sys.executable).parent / "meshctl"
REPO_ROOT = Path(__file__).resolve().parents[2]

needs_user_svc = pytest.mark.skipif(
    importlib.util.find_spec("user_svc.__main__") is None,
    reason="user_svc has no __main__ module yet",
)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def meshctl_env(config: MeshConfig, etcd_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["MESH_ETCD_ENDPOINTS"] = etcd_url or ",".join(config.endpoint_urls)
    env["MESH_NAMESPACE"] = config.namespace
    env["MESH_LEASE_TTL"] = str(config.lease_ttl)
    # Short drains keep the stop of `meshctl up` quick.
    env["MESH_GRACE"] = "1"
    return env


async def meshctl(*args: str, env: dict[str, str], cwd: Path | None = None) -> Result:
    process = await asyncio.create_subprocess_exec(
        str(MESHCTL),
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


class MeshctlProcess:
    """A long-running meshctl command whose output the test reads line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(cls, *args: str, env: dict[str, str], cwd: Path) -> MeshctlProcess:
        process = await asyncio.create_subprocess_exec(
            str(MESHCTL),
            *args,
            env=env,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def read_line(self, timeout: float = 20.0) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            raw = await self.process.stdout.readline()
        if not raw:
            await self.fail("stdout closed")
        line = raw.decode().rstrip("\n")
        self.lines.append(line)
        return line

    async def read_until(self, text: str, timeout: float = 60.0) -> str:
        async with asyncio.timeout(timeout):
            while True:
                line = await self.read_line(timeout)
                if text in line:
                    return line

    async def stderr_line(self, timeout: float = 20.0) -> str:
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout):
            return (await self.process.stderr.readline()).decode()

    async def stop(self, signum: int, timeout: float = 40.0) -> Result:
        if self.process.returncode is None:
            self.process.send_signal(signum)
        async with asyncio.timeout(timeout):
            out, err = await self.process.communicate()
        assert self.process.returncode is not None
        return Result(self.process.returncode, out.decode(), err.decode())

    async def fail(self, reason: str) -> None:
        result = await self.stop(signal.SIGKILL)
        pytest.fail(
            f"meshctl: {reason}\nstdout so far:\n"
            + "\n".join(self.lines)
            + f"\n{result.stdout}\nstderr:\n{result.stderr}"
        )

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


@pytest.fixture
def env(mesh_config) -> dict[str, str]:
    return meshctl_env(mesh_config)


async def register(
    etcd: EtcdClient,
    config: MeshConfig,
    service: str,
    instance_id: str,
    port: int,
    ttl: int = 30,
) -> int:
    """Register an instance the way registration does; return the lease id."""
    lease, _ = await etcd.grant_lease(ttl)
    info = InstanceInfo(instance_id, version="1.2.3", zone="zone-a")
    key = config.service_prefix(service) + instance_id
    await etcd.put(key, encode_record(f"127.0.0.1:{port}", info), lease=lease)
    return lease


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    for fragment in fragments:
        assert fragment in result.stderr


# --- ls -----------------------------------------------------------------------


async def test_ls_json_shows_registered_instance(etcd, mesh_config, env):
    await register(etcd, mesh_config, COUNTER_SERVICE, "c-1", 5001)

    result = await meshctl("ls", "--json", env=env)

    assert result.returncode == 0
    rows = json.loads(result.stdout)
    assert len(rows) == 1
    row = rows[0]
    assert row["service"] == COUNTER_SERVICE
    assert row["instance_id"] == "c-1"
    assert row["address"] == "127.0.0.1:5001"
    assert row["version"] == "1.2.3"
    assert row["zone"] == "zone-a"
    assert 0 < row["lease_time_left"] <= 30
    assert row["age_seconds"] >= 0


async def test_ls_alias_filters_service(etcd, mesh_config, env):
    await register(etcd, mesh_config, COUNTER_SERVICE, "c-1", 5001)
    await register(etcd, mesh_config, USER_SERVICE, "u-1", 5002)

    result = await meshctl("ls", "user", "--json", env=env)

    assert result.returncode == 0
    assert [row["instance_id"] for row in json.loads(result.stdout)] == ["u-1"]


async def test_ls_table_lists_instances(etcd, mesh_config, env):
    await register(etcd, mesh_config, COUNTER_SERVICE, "c-1", 5001)
    await register(etcd, mesh_config, COUNTER_SERVICE, "c-2", 5002)

    result = await meshctl("ls", "counter_svc", env=env)

    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert "LEASE LEFT" in lines[0]
    assert len(lines) == 3
    assert "c-1" in lines[1]
    assert "127.0.0.1:5002" in lines[2]


async def test_ls_skips_undecodable_value(etcd, mesh_config, env):
    await register(etcd, mesh_config, COUNTER_SERVICE, "c-1", 5001)
    await etcd.put(mesh_config.service_prefix(COUNTER_SERVICE) + "junk", b"not json")

    result = await meshctl("ls", "--json", env=env)

    assert result.returncode == 0
    assert [row["instance_id"] for row in json.loads(result.stdout)] == ["c-1"]
    assert result.stderr.count("\n") == 1
    assert "skipping /test-mesh/services/" in result.stderr


# --- watch --------------------------------------------------------------------


async def test_watch_json_reports_added_then_removed(etcd, mesh_config, env, tmp_path):
    await register(etcd, mesh_config, COUNTER_SERVICE, "before", 5000)
    watch = await MeshctlProcess.start("watch", "--json", env=env, cwd=tmp_path)
    try:
        first = json.loads(await watch.read_line())
        assert "watching /test-mesh/services/" in await watch.stderr_line()

        lease = await register(etcd, mesh_config, COUNTER_SERVICE, "c-9", 5009)
        added = json.loads(await watch.read_line())
        await etcd.revoke_lease(lease)
        removed = json.loads(await watch.read_line())
    finally:
        result = await watch.stop(signal.SIGINT)

    assert (first["event"], first["instance_id"]) == ("added", "before")
    assert (added["event"], added["instance_id"]) == ("added", "c-9")
    assert (removed["event"], removed["instance_id"]) == ("removed", "c-9")
    assert removed["address"] == "127.0.0.1:5009"
    assert first["revision"] < added["revision"] < removed["revision"]
    assert result.returncode == 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


async def test_watch_service_ignores_other_services(etcd, mesh_config, env, tmp_path):
    watch = await MeshctlProcess.start("watch", "user", env=env, cwd=tmp_path)
    try:
        await watch.stderr_line()
        await register(etcd, mesh_config, COUNTER_SERVICE, "c-1", 5001)
        await register(etcd, mesh_config, USER_SERVICE, "u-1", 5002)
        line = await watch.read_line()
    finally:
        result = await watch.stop(signal.SIGTERM)

    assert line.startswith(f"+ added    {USER_SERVICE}  u-1  127.0.0.1:5002  rev=")
    assert result.returncode == 0
    assert result.stdout == ""


# --- health -------------------------------------------------------------------


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[int, Any]]:
    # grpc-stubs does not declare the `health.aio` alias that grpcio ships.
    servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, servicer
    await server.stop(None)


async def test_health_reports_each_status(etcd, mesh_config, env, health_server):
    port, servicer = health_server
    serving = health_pb2.HealthCheckResponse.SERVING
    await servicer.set(COUNTER_SERVICE, serving)
    await servicer.set(USER_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    await register(etcd, mesh_config, COUNTER_SERVICE, "good", port)
    await register(etcd, mesh_config, USER_SERVICE, "draining", port)
    await register(etcd, mesh_config, USER_SERVICE, "dead", free_port())

    result = await meshctl("health", env=env)

    assert result.returncode == 1
    status = {
        line.split()[1]: line.split()[3] for line in result.stdout.splitlines()[1:]
    }
    assert status == {
        "good": "SERVING",
        "draining": "NOT_SERVING",
        "dead": "UNREACHABLE",
    }


async def test_health_all_serving_exits_0(etcd, mesh_config, env, health_server):
    port, servicer = health_server
    await servicer.set(COUNTER_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    await register(etcd, mesh_config, COUNTER_SERVICE, "good", port)
    await register(etcd, mesh_config, USER_SERVICE, "dead", free_port())

    result = await meshctl("health", "counter", env=env)

    assert result.returncode == 0
    assert "good" in result.stdout
    assert "dead" not in result.stdout


async def test_health_of_real_counter_process(etcd, mesh_config, env, tmp_path):
    processes = ServiceProcesses(mesh_config, tmp_path)
    try:
        started = await processes.start(etcd, "counter_svc", COUNTER_SERVICE)
        result = await meshctl("health", "counter", env=env)
    finally:
        processes.stop_all()

    assert result.returncode == 0
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert rows == [[COUNTER_SERVICE, started.instance_id, started.address, "SERVING"]]


async def test_health_without_instances_exits_1(env):
    result = await meshctl("health", "counter", env=env)

    assert result.returncode == 1
    assert "no instances registered under" in result.stderr


# --- unreachable etcd -----------------------------------------------------------


@pytest.mark.parametrize(
    "command", [("ls",), ("ls", "--json"), ("watch",), ("health",)]
)
async def test_unreachable_etcd_is_one_line_exit_2(command, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    env = meshctl_env(MeshConfig.from_env({}), etcd_url=url)

    result = await meshctl(*command, env=env, cwd=tmp_path)

    assert_one_line_error(result, f"meshctl: etcd is unreachable at {url}")


# --- etcd ---------------------------------------------------------------------


async def test_etcd_command_runs_until_sigint(tmp_path):
    port = free_port()
    env = meshctl_env(MeshConfig.from_env({}))
    server = await MeshctlProcess.start(
        "etcd", "--port", str(port), env=env, cwd=tmp_path
    )
    try:
        line = await server.read_line()
        assert port_is_open("127.0.0.1", port)
    finally:
        result = await server.stop(signal.SIGINT)

    assert line.startswith(f"etcd is running at http://127.0.0.1:{port}")
    assert result.returncode == 0
    assert result.stdout == "etcd stopped\n"
    assert not port_is_open("127.0.0.1", port)
    assert (tmp_path / ".mesh" / "etcd").is_dir()


# --- up -----------------------------------------------------------------------


async def test_up_with_taken_front_port_starts_nothing(tmp_path):
    etcd_port = free_port()
    env = meshctl_env(MeshConfig.from_env({}), etcd_url=f"http://127.0.0.1:{etcd_port}")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        result = await meshctl(
            "up",
            "--front-port",
            str(port),
            "--ingress-port",
            str(free_port()),
            env=env,
            cwd=tmp_path,
        )

    assert_one_line_error(result, f"front port {port} is already taken")
    assert not (tmp_path / ".mesh" / "etcd").exists()
    assert not port_is_open("127.0.0.1", etcd_port)


async def test_up_with_failing_etcd_is_one_line(tmp_path):
    env = meshctl_env(
        MeshConfig.from_env({}), etcd_url=f"http://127.0.0.1:{free_port()}"
    )
    env["MESH_ETCD_BINARY"] = "/bin/false"

    result = await meshctl(
        "up",
        "--front-port",
        str(free_port()),
        "--ingress-port",
        str(free_port()),
        env=env,
        cwd=tmp_path,
    )

    assert_one_line_error(result, "etcd exited with status 1 while starting")
    assert not (tmp_path / ".mesh" / "logs").exists()


async def wait_ready(front_port: int) -> None:
    url = f"http://127.0.0.1:{front_port}/readyz"
    async with httpx.AsyncClient(timeout=2) as client, asyncio.timeout(30):
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)


async def counter_rows(env: dict[str, str]) -> list[dict[str, object]]:
    result = await meshctl("ls", "counter", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


async def run_grpcurl(lines: list[str]) -> list[dict[str, object]]:
    """Run every Increment command that meshctl up printed: ingress and direct."""
    commands = [line.strip() for line in lines if "/Increment" in line]
    assert len(commands) == 2
    return [await run_one_grpcurl(command) for command in commands]


async def run_one_grpcurl(command: str) -> dict[str, object]:
    process = await asyncio.create_subprocess_exec(
        *shlex.split(command),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return dict(json.loads(out))


@needs_user_svc
async def test_up_runs_mesh_and_stops_clean(etcd, mesh_config, env, tmp_path):
    front_port = free_port()
    up = await MeshctlProcess.start(
        "up",
        "--counter",
        "2",
        "--user",
        "1",
        "--front-port",
        str(front_port),
        "--ingress-port",
        str(free_port()),
        env=env,
        cwd=tmp_path,
    )
    try:
        await up.read_until("mesh is up:")
        await up.read_until("call one counter instance directly:")
        await up.read_until(" -plaintext ")
        await wait_ready(front_port)
        counters = await counter_rows(env)
        users = json.loads((await meshctl("ls", "user", "--json", env=env)).stdout)
        reply = await run_grpcurl(up.lines)

        # A counter killed behind meshctl's back is cleaned up and restarted.
        victim = str(counters[0]["instance_id"])
        os.kill(int(victim.rsplit("-", 2)[-2]), signal.SIGKILL)
        await up.read_until("removed the registration of counter-")
        await up.read_until("restarted as pid")
        await up.read_until(f"added {COUNTER_SERVICE}")
        after_restart = await counter_rows(env)
    finally:
        result = await up.stop(signal.SIGTERM)
    kvs, _ = await etcd.get_prefix(mesh_config.services_prefix())

    assert len(counters) == 2
    assert len(users) == 1
    assert all("value" in json.dumps(answer) for answer in reply)
    assert len(after_restart) == 2
    assert victim not in {row["instance_id"] for row in after_restart}
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    assert "still registered" not in result.stderr
    assert kvs == []
    assert (tmp_path / ".mesh" / "logs" / "counter-1.log").exists()


async def test_up_starts_and_stops_embedded_etcd(tmp_path):
    etcd_port = free_port()
    url = f"http://127.0.0.1:{etcd_port}"
    config = MeshConfig.from_env({}, etcd_endpoints=url, namespace="/test-mesh")
    env = meshctl_env(config)
    up = await MeshctlProcess.start(
        "up",
        "--counter",
        "1",
        "--user",
        "0",
        "--front-port",
        str(free_port()),
        "--ingress-port",
        str(free_port()),
        env=env,
        cwd=tmp_path,
    )
    try:
        first = await up.read_line(30)
        await up.read_until("mesh is up:")
        counters = await counter_rows(env)
    finally:
        result = await up.stop(signal.SIGTERM)

    assert first.startswith(f"starting an embedded etcd at {url}")
    assert len(counters) == 1
    assert result.returncode == 0
    assert result.stdout.rstrip().endswith("embedded etcd stopped")
    assert not port_is_open("127.0.0.1", etcd_port)
    # The stopped counter left no key in the embedded etcd's data.
    server = EtcdProcess(data_dir=tmp_path / ".mesh" / "etcd", client_port=etcd_port)
    server.start()
    try:
        async with EtcdClient(config) as client:
            kvs, _ = await client.get_prefix(config.services_prefix())
    finally:
        server.stop()
    assert kvs == []
