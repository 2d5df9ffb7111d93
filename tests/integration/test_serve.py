"""Service start-up failures end with one line and a non-zero exit."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def run_counter_svc(*args: str, env_extra: dict[str, str] | None = None):
    env = {"PATH": "/usr/bin:/bin", "MESH_ETCD_ENDPOINTS": "http://127.0.0.1:1"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "counter_svc", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_taken_port_gives_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_counter_svc(
            "--port",
            str(port),
            "--bind-host",
            "127.0.0.1",
            "--advertise-host",
            "127.0.0.1",
        )

    assert result.returncode == 2
    assert f"cannot bind 127.0.0.1:{port}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("env_extra", "setting"),
    [
        ({"MESH_ADVERTISE_HOST": "0.0.0.0"}, "MESH_ADVERTISE_HOST"),
        ({"MESH_LEASE_TTL": "zero"}, "MESH_LEASE_TTL"),
        ({"MESH_NAMESPACE": "no-slash"}, "MESH_NAMESPACE"),
        ({"MESH_ETCD_ENDPOINTS": "ftp://x:1"}, "MESH_ETCD_ENDPOINTS"),
    ],
)
def test_bad_configuration_names_the_setting(env_extra, setting):
    result = run_counter_svc(env_extra=env_extra)

    assert result.returncode == 2
    assert setting in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
