"""docker-compose.yml and the Dockerfile, checked offline: schema, shape, and
that every command and environment is accepted by the code it starts."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry.config import MeshConfig
from registry.serve import add_server_arguments, config_from_arguments
from user_svc.__main__ import session_parser

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

ETCD_MEMBERS = ("etcd1", "etcd2", "etcd3")
MESH_SERVICES = ("counter_svc", "user_svc", "front", "ingress")
REPLICATED = ("counter_svc", "user_svc")


def load_compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def environment(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service].get("environment", {}).items()}


def module_of(service: str) -> tuple[str, list[str]]:
    """Return the module that `python -m` runs and the arguments after it."""
    command = SERVICES[service]["command"]
    assert isinstance(command, list), f"{service}: use the exec form of command"
    assert command[:2] == ["python", "-m"], f"{service}: {command!r}"
    return command[2], command[3:]


def mesh_service_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_server_arguments(parser)
    return parser


def user_service_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False, parents=[session_parser()])
    add_server_arguments(parser)
    return parser


def module_parser(module: str) -> Callable[[], argparse.ArgumentParser]:
    def build() -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = importlib.import_module(module).build_parser()
        return parser

    return build


# The argument parser that each module builds, with MESH_* read as defaults.
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "counter_svc": mesh_service_parser,
    "user_svc": user_service_parser,
    "front": module_parser("front.__main__"),
    "registry.ingress": module_parser("registry.ingress"),
}


# --- schema and shape ---------------------------------------------------------


def test_compose_file_passes_schema_check():
    result = subprocess.run(
        [
            str(CHECK_JSONSCHEMA),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_unknown_key(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("restart:", "restrat:", 1))

    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "restrat" in result.stdout


def test_etcd_cluster_has_three_pinned_members():
    images = {SERVICES[name]["image"] for name in ETCD_MEMBERS}

    assert len(images) == 1
    assert re.fullmatch(
        r"(quay\.io/coreos|gcr\.io/etcd-development)/etcd:v3\.5\.\d+", images.pop()
    )


@pytest.mark.parametrize("member", ETCD_MEMBERS)
def test_etcd_member_joins_static_cluster(member):
    env = environment(member)
    cluster = dict(
        item.split("=", 1) for item in env["ETCD_INITIAL_CLUSTER"].split(",")
    )

    assert env["ETCD_NAME"] == member
    assert cluster == {name: f"http://{name}:2380" for name in ETCD_MEMBERS}
    assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == f"http://{member}:2380"
    assert env["ETCD_ADVERTISE_CLIENT_URLS"] == f"https://{member}:2379"
    assert env["ETCD_INITIAL_CLUSTER_STATE"] == "new"
    assert env["ETCD_DATA_DIR"].startswith("/var/lib/etcd/")
    assert SERVICES[member]["volumes"] == [
        f"{member}-data:/var/lib/etcd",
        "mesh-certs:/certs:ro",
    ]
    assert f"{member}-data" in COMPOSE["volumes"]


@pytest.mark.parametrize("member", ETCD_MEMBERS)
def test_etcd_member_requires_client_certificates(member):
    env = environment(member)

    assert env["ETCD_LISTEN_CLIENT_URLS"].startswith("https://")
    assert env["ETCD_CLIENT_CERT_AUTH"] == "true"
    assert env["ETCD_TRUSTED_CA_FILE"] == "/certs/etcd/ca.crt"
    assert SERVICES[member]["depends_on"] == {
        "certs": {"condition": "service_completed_successfully"}
    }


@pytest.mark.parametrize("service", [*ETCD_MEMBERS, *MESH_SERVICES])
def test_every_service_has_healthcheck_and_restart(service):
    spec = SERVICES[service]

    assert spec["healthcheck"]["test"][0] == "CMD"
    assert spec["restart"] == "unless-stopped"


@pytest.mark.parametrize("service", MESH_SERVICES)
def test_mesh_service_waits_for_healthy_etcd(service):
    depends = SERVICES[service]["depends_on"]

    assert depends == {
        **{name: {"condition": "service_healthy"} for name in ETCD_MEMBERS},
        "auth-init": {"condition": "service_completed_successfully"},
    }


IDENTITIES = {
    "counter_svc": "counter-svc",
    "user_svc": "user-svc",
    "front": "front",
    "ingress": "ingress",
}


@pytest.mark.parametrize("service", MESH_SERVICES)
def test_mesh_service_runs_secure_as_its_identity(service):
    env = environment(service)
    config = MeshConfig.from_env(env)
    identity = IDENTITIES[service]
    security = config.etcd_security

    assert all(endpoint.secure for endpoint in config.etcd_endpoints)
    assert security.user == identity
    assert str(security.password_file) == f"/auth/{identity}.password"
    assert str(security.cert) == f"/certs/etcd/{identity}.crt"
    assert config.tls is not None
    assert str(config.tls.cert) == f"/certs/{identity}.crt"
    assert SERVICES[service]["volumes"] == [
        "mesh-certs:/certs:ro",
        "mesh-auth:/auth:ro",
    ]


@pytest.mark.parametrize("service", MESH_SERVICES)
def test_mesh_service_uses_one_image_and_all_members(service):
    spec, env = SERVICES[service], environment(service)
    config = MeshConfig.from_env(env)

    assert spec["build"] == "."
    assert spec["image"] == "etcd-mesh:local"
    assert [(e.host, e.port) for e in config.etcd_endpoints] == [
        (name, 2379) for name in ETCD_MEMBERS
    ]
    assert config.namespace == "/mesh"
    assert "MESH_ADVERTISE_HOST" not in env
    assert config.advertise_host is None


@pytest.mark.parametrize("service", REPLICATED)
def test_replicas_can_be_scaled(service):
    spec = SERVICES[service]

    assert spec["deploy"]["replicas"] == 2
    assert "container_name" not in spec
    assert "ports" not in spec


@pytest.mark.parametrize(("service", "port"), [("front", 8080), ("ingress", 50051)])
def test_edge_is_published(service, port):
    assert SERVICES[service]["ports"] == [f"{port}:{port}"]


# --- commands and environments are accepted by the code -------------------------


@pytest.mark.parametrize("service", MESH_SERVICES)
def test_command_parses_with_service_environment(service, monkeypatch):
    module, arguments = module_of(service)
    for key in [k for k in os.environ if k.startswith("MESH_")]:
        monkeypatch.delenv(key)
    for key, value in environment(service).items():
        monkeypatch.setenv(key, value)

    parsed = PARSERS[module]().parse_args(arguments)

    if module == "front":
        assert parsed.host == "0.0.0.0"
        assert parsed.port == 8080
    else:
        assert parsed.bind_host == "0.0.0.0"
        assert parsed.port == 50051
    if module in {"counter_svc", "user_svc"}:
        assert config_from_arguments(parsed).lease_ttl == 10


@pytest.mark.parametrize("service", MESH_SERVICES)
def test_command_runs_help_with_service_environment(service):
    module, arguments = module_of(service)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(environment(service))

    # argparse converts each flag value as it reads it, so a bad value
    # before --help still fails; --help then exits before any etcd request.
    result = subprocess.run(
        [sys.executable, "-m", module, *arguments, "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.mark.parametrize("service", MESH_SERVICES)
def test_healthcheck_code_compiles(service):
    test = SERVICES[service]["healthcheck"]["test"]

    assert test[1:3] == ["python", "-c"]
    compile(test[3], f"{service} healthcheck", "exec")


# --- Dockerfile -----------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_base_and_user():
    instructions = dockerfile_instructions()
    users = [rest for keyword, rest in instructions if keyword == "USER"]

    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert users
    assert users[-1] not in {"root", "0"}


def test_dockerfile_installs_without_dev_extras():
    runs = " ".join(
        rest for keyword, rest in dockerfile_instructions() if keyword == "RUN"
    )

    assert "pip install ." in runs
    assert "[dev]" not in runs
    assert "etcd" not in runs


def test_dockerfile_copies_existing_paths():
    for keyword, rest in dockerfile_instructions():
        if keyword != "COPY":
            continue
        *sources, _target = rest.split()
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"COPY source {source} is missing"


def test_dockerfile_command_module_exists():
    commands = [
        rest
        for keyword, rest in dockerfile_instructions()
        if keyword in {"CMD", "ENTRYPOINT"}
    ]
    argv = json.loads(commands[-1])

    assert argv[:2] == ["python", "-m"]
    assert importlib.util.find_spec(argv[2]) is not None


@pytest.mark.parametrize("service", MESH_SERVICES)
def test_compose_command_module_exists(service):
    module, _ = module_of(service)

    assert importlib.util.find_spec(module) is not None
