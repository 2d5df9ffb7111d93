"""`meshctl up --secure`: the printed grpcurl commands work against the mesh."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
from pathlib import Path

import pytest

from registry.config import MeshConfig
from registry.etcd_process import free_port
from tests.integration.test_meshctl import MeshctlProcess, meshctl_env

pytestmark = pytest.mark.integration

COUNTER = "mesh.counter.v1.CounterService"


async def grpcurl(command: list[str], cwd: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode == 0, f"{shlex.join(command)}: {err.decode()}"
    return out.decode()


def target_command(printed: str, *request: str) -> list[str]:
    """The printed command's program, flags and address, with a new request."""
    words = shlex.split(printed)
    if "-d" in words:
        at = words.index("-d")
        words = [*words[:at], *words[at + 2 :]]
        words = words[:-1]  # drop the method
    else:
        words = words[:-1]  # drop "list"
    return [*words, *request]


async def test_up_secure_prints_working_grpcurl(tmp_path: Path):
    url = f"http://127.0.0.1:{free_port()}"
    env = meshctl_env(MeshConfig.from_env({}, etcd_endpoints=url, namespace="/secure"))
    up = await MeshctlProcess.start(
        "up",
        "--secure",
        "--counter",
        "1",
        "--user",
        "1",
        "--front-port",
        str(free_port()),
        "--ingress-port",
        str(free_port()),
        env=env,
        cwd=tmp_path,
    )
    try:
        await up.read_until("mesh is up:", timeout=90)
        await up.read_until("call one counter instance directly:")
        await up.read_until("/Increment")
        printed = [line.strip() for line in up.lines if "-cacert" in line]
        ingress_list = next(line for line in printed if line.endswith(" list"))
        increments = [line for line in printed if "/Increment" in line]
        listed = await grpcurl(shlex.split(ingress_list), tmp_path)
        described = await grpcurl(
            target_command(ingress_list, "describe", COUNTER), tmp_path
        )
        direct_list = await grpcurl(target_command(increments[1], "list"), tmp_path)
        replies = [
            json.loads(await grpcurl(shlex.split(command), tmp_path))
            for command in increments
        ]
        plain = await asyncio.create_subprocess_exec(
            *target_command(increments[1], "list")[:1],
            "-plaintext",
            target_command(increments[1], "list")[-2],
            "list",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await plain.communicate()
    finally:
        result = await up.stop(signal.SIGTERM)

    assert len(printed) == 3
    assert all("-cert " in line and "-key " in line for line in printed)
    assert "-plaintext" not in "\n".join(printed)
    assert COUNTER in listed
    assert "rpc Increment" in described
    assert COUNTER in direct_list
    assert len(replies) == 2
    assert all('"value"' in json.dumps(reply) for reply in replies)
    assert plain.returncode != 0
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / ".mesh" / "auth" / "counter-svc.password").exists()
