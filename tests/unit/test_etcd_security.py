"""etcd TLS and login settings: validation, and no password in any message."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import MeshConfig
from registry.errors import ConfigError

SECRET = "s3cret-value-that-must-not-leak"


def test_https_endpoint_requires_ca():
    with pytest.raises(ConfigError) as caught:
        MeshConfig.from_env({"MESH_ETCD_ENDPOINTS": "https://127.0.0.1:2379"})

    assert caught.value.setting == "MESH_ETCD_CA"


def test_ca_with_http_endpoint_rejected():
    env = {"MESH_ETCD_ENDPOINTS": "http://127.0.0.1:2379", "MESH_ETCD_CA": "ca.crt"}
    with pytest.raises(ConfigError) as caught:
        MeshConfig.from_env(env)

    assert caught.value.setting == "MESH_ETCD_ENDPOINTS"


def test_cert_without_key_rejected():
    env = {
        "MESH_ETCD_ENDPOINTS": "https://127.0.0.1:2379",
        "MESH_ETCD_CA": "ca.crt",
        "MESH_ETCD_CERT": "client.crt",
    }
    with pytest.raises(ConfigError) as caught:
        MeshConfig.from_env(env)

    assert caught.value.setting == "MESH_ETCD_CERT"


def test_user_without_password_rejected():
    with pytest.raises(ConfigError) as caught:
        MeshConfig.from_env({"MESH_ETCD_USER": "counter-svc"})

    assert caught.value.setting == "MESH_ETCD_PASSWORD_FILE"


def test_password_and_file_together_rejected():
    env = {
        "MESH_ETCD_USER": "counter-svc",
        "MESH_ETCD_PASSWORD": SECRET,
        "MESH_ETCD_PASSWORD_FILE": "p",
    }
    with pytest.raises(ConfigError) as caught:
        MeshConfig.from_env(env)

    assert SECRET not in str(caught.value)


def test_password_not_in_repr():
    env = {"MESH_ETCD_USER": "counter-svc", "MESH_ETCD_PASSWORD": SECRET}
    config = MeshConfig.from_env(env)

    assert config.etcd_security.read_password() == SECRET
    assert SECRET not in repr(config)


def test_password_file_first_line(tmp_path: Path):
    path = tmp_path / "pw"
    path.write_text(f"{SECRET}\n")
    env = {"MESH_ETCD_USER": "u", "MESH_ETCD_PASSWORD_FILE": str(path)}

    assert MeshConfig.from_env(env).etcd_security.read_password() == SECRET


def test_missing_password_file_named(tmp_path: Path):
    path = tmp_path / "absent"
    env = {"MESH_ETCD_USER": "u", "MESH_ETCD_PASSWORD_FILE": str(path)}
    with pytest.raises(ConfigError) as caught:
        MeshConfig.from_env(env).etcd_security.read_password()

    assert str(path) in str(caught.value)


def test_mesh_tls_needs_all_three():
    with pytest.raises(ConfigError) as caught:
        MeshConfig.from_env({"MESH_TLS_CERT": "a.crt"})

    assert caught.value.setting == "MESH_TLS_KEY"


def test_mesh_tls_read_from_env():
    env = {"MESH_TLS_CERT": "a.crt", "MESH_TLS_KEY": "a.key", "MESH_TLS_CA": "ca.crt"}
    config = MeshConfig.from_env(env)

    assert config.tls is not None
    assert config.tls.ca == Path("ca.crt")
