"""Flags and exit status of `python -m registry.ingress`."""

from __future__ import annotations

import socket

import pytest

from registry import ingress


def test_defaults(monkeypatch):
    for name in ("MESH_INGRESS_PORT", "MESH_BIND_HOST", "MESH_INGRESS_POLICY"):
        monkeypatch.delenv(name, raising=False)

    args = ingress.build_parser().parse_args([])

    assert args.port == ingress.DEFAULT_PORT
    assert args.bind_host == "0.0.0.0"
    assert args.policy == "round_robin"


def test_environment_sets_defaults(monkeypatch):
    monkeypatch.setenv("MESH_INGRESS_PORT", "6000")
    monkeypatch.setenv("MESH_BIND_HOST", "127.0.0.1")

    args = ingress.build_parser().parse_args([])

    assert args.port == 6000
    assert args.bind_host == "127.0.0.1"


def test_flags_override_environment(monkeypatch):
    monkeypatch.setenv("MESH_INGRESS_PORT", "6000")

    args = ingress.build_parser().parse_args(["--port", "7000", "--policy", "ewma"])

    assert args.port == 7000
    assert args.policy == "ewma"


def test_unknown_policy_is_rejected(capsys):
    with pytest.raises(SystemExit) as exited:
        ingress.build_parser().parse_args(["--policy", "random"])

    assert exited.value.code == 2
    assert "--policy" in capsys.readouterr().err


def test_invalid_namespace_exits_with_one_line(capsys):
    status = ingress.main(["--namespace", "no slash", "--log-level", "ERROR"])

    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert "MESH_NAMESPACE" in err
    assert "Traceback" not in err


def test_taken_port_exits_with_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        status = ingress.main(
            ["--port", str(port), "--bind-host", "127.0.0.1", "--log-level", "ERROR"]
        )

    err = capsys.readouterr().err
    assert status == 2
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
