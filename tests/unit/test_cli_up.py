"""meshctl up: port checks, child commands, embedded etcd choice, messages."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from registry.cli_common import COUNTER_SERVICE, USER_SERVICE
from registry.cli_etcd import embedded_etcd_for, is_local_host, state_dir
from registry.cli_status import grpcurl_command, ready_message
from registry.cli_up import UpOptions, child_environment, child_specs, ensure_port_free
from registry.config import MeshConfig
from registry.errors import EtcdUnavailableError
from registry.etcd_process import EtcdStartError, free_port
from registry.model import Endpoint, InstanceInfo
from registry.supervisor import SupervisorError


def config(endpoints: str = "http://127.0.0.1:2379", **kwargs) -> MeshConfig:
    # https:// needs the etcd CA; the file is never read here.
    env = {"MESH_ETCD_CA": "ca.crt"} if endpoints.startswith("https://") else {}
    return MeshConfig.from_env(env, etcd_endpoints=endpoints, **kwargs)


def endpoint(service: str, instance_id: str, port: int) -> Endpoint:
    return Endpoint(
        service, instance_id, f"127.0.0.1:{port}", InstanceInfo(instance_id)
    )


def test_port_with_listener_is_taken():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        with pytest.raises(
            SupervisorError, match=f"front port {port} is already taken"
        ):
            ensure_port_free(port)


def test_free_port_passes():
    ensure_port_free(free_port())


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.4.5.6", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("etcd.example", False),
    ],
)
def test_is_local_host(host, local):
    assert is_local_host(host) is local


def test_embedded_etcd_uses_endpoint_port(tmp_path):
    server = embedded_etcd_for(config("http://localhost:23790"), tmp_path)

    assert server.client_url == "http://127.0.0.1:23790"
    assert server.data_dir == tmp_path / "etcd"
    assert server.log_path == tmp_path / "etcd.log"


def test_embedded_etcd_refused_for_remote_host(tmp_path):
    with pytest.raises(
        EtcdUnavailableError, match="only for a local address"
    ) as raised:
        embedded_etcd_for(config("http://10.1.2.3:2379"), tmp_path)

    assert str(raised.value).startswith("etcd is unreachable at http://10.1.2.3:2379")


@pytest.mark.parametrize("url", ["https://127.0.0.1:2379", "http://[::1]:2379"])
def test_embedded_etcd_refused_for_https_and_ipv6(tmp_path, url):
    with pytest.raises(EtcdStartError, match="http:// IPv4 address"):
        embedded_etcd_for(config(url), tmp_path)


def test_state_dir_is_dot_mesh(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert state_dir() == tmp_path / ".mesh"


def test_child_environment_for_local_etcd(monkeypatch):
    monkeypatch.delenv("MESH_ADVERTISE_HOST", raising=False)
    monkeypatch.delenv("MESH_BIND_HOST", raising=False)

    env = child_environment(config("http://127.0.0.1:2400", namespace="/n"))

    assert env["MESH_ETCD_ENDPOINTS"] == "http://127.0.0.1:2400"
    assert env["MESH_NAMESPACE"] == "/n"
    assert env["MESH_ADVERTISE_HOST"] == "127.0.0.1"
    assert env["MESH_BIND_HOST"] == "127.0.0.1"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_child_environment_keeps_configured_advertise_host(monkeypatch):
    monkeypatch.delenv("MESH_BIND_HOST", raising=False)

    env = child_environment(config(advertise_host="10.0.0.7"))

    assert env["MESH_ADVERTISE_HOST"] == "10.0.0.7"
    assert "MESH_BIND_HOST" not in env


def test_child_environment_remote_etcd_detects_host(monkeypatch):
    monkeypatch.delenv("MESH_ADVERTISE_HOST", raising=False)

    env = child_environment(config("http://10.0.0.1:2379"))

    assert "MESH_ADVERTISE_HOST" not in env


def test_child_specs_commands(tmp_path):
    specs = child_specs(
        UpOptions(counters=2, users=1, front_port=9000, ingress_port=9001),
        config(),
        tmp_path,
    )

    assert [s.name for s in specs] == [
        "counter-1",
        "counter-2",
        "user-1",
        "front",
        "ingress",
    ]
    assert specs[4].argv == (sys.executable, "-m", "registry.ingress", "--port", "9001")
    assert specs[0].argv == (sys.executable, "-m", "counter_svc")
    assert specs[2].argv == (sys.executable, "-m", "user_svc")
    assert specs[3].argv == (sys.executable, "-m", "front", "--port", "9000")
    assert specs[1].log_path == tmp_path / "counter-2.log"


def test_child_specs_without_replicas(tmp_path):
    specs = child_specs(UpOptions(counters=0, users=0), config(), tmp_path)

    assert [s.name for s in specs] == ["front", "ingress"]


def test_grpcurl_command_uses_first_counter_address():
    endpoints = {
        "k1": endpoint(USER_SERVICE, "u", 7000),
        "k2": endpoint(COUNTER_SERVICE, "b", 7002),
        "k3": endpoint(COUNTER_SERVICE, "a", 7001),
    }

    command = grpcurl_command(endpoints)

    assert command is not None
    assert command.endswith(
        """ -plaintext -d '{"name":"demo","delta":1}' """
        f"127.0.0.1:7001 {COUNTER_SERVICE}/Increment"
    )


def test_grpcurl_command_needs_a_counter():
    assert grpcurl_command({"k": endpoint(USER_SERVICE, "u", 7000)}) is None


def test_ready_message_lists_urls():
    message = ready_message(8123, {}, Path("/tmp/logs"))

    assert "http://127.0.0.1:8123/\n" in message
    assert "http://127.0.0.1:8123/mesh\n" in message
    assert "http://127.0.0.1:8123/docs\n" in message
    assert "grpcurl" not in message
