"""Configuration parsing and validation."""

from __future__ import annotations

import socket

import pytest

from registry.config import (
    MeshConfig,
    detect_advertise_host,
    format_address,
    parse_endpoints,
    validate_advertise_host,
)
from registry.errors import AdvertiseAddressError, ConfigError
from registry.etcd import _client_endpoints


def test_defaults_without_environment():
    config = MeshConfig.from_env({})

    assert config.endpoint_urls == ("http://127.0.0.1:2379",)
    assert config.namespace == "/mesh"
    assert config.lease_ttl == 10
    assert config.advertise_host is None


def test_flags_override_environment():
    env = {"MESH_NAMESPACE": "/from-env", "MESH_LEASE_TTL": "20"}

    config = MeshConfig.from_env(env, namespace="/from-flag", lease_ttl=5)

    assert config.namespace == "/from-flag"
    assert config.lease_ttl == 5


def test_several_endpoints_are_parsed_in_order():
    endpoints = parse_endpoints("http://10.0.0.1:2379, https://10.0.0.2:2380,10.0.0.3")

    assert [e.url for e in endpoints] == [
        "http://10.0.0.1:2379",
        "https://10.0.0.2:2380",
        "http://10.0.0.3:2379",
    ]


@pytest.mark.parametrize(
    "raw", ["", " , ", "ftp://host:1", "http://:2379", "http://h:99999"]
)
def test_invalid_endpoints_name_the_variable(raw):
    with pytest.raises(ConfigError) as caught:
        parse_endpoints(raw)

    assert "MESH_ETCD_ENDPOINTS" in str(caught.value)


@pytest.mark.parametrize("raw", ["0", "2", "abc", "100000"])
def test_invalid_lease_ttl_is_rejected(raw):
    with pytest.raises(ConfigError) as caught:
        MeshConfig.from_env({"MESH_LEASE_TTL": raw})

    assert "MESH_LEASE_TTL" in str(caught.value)


@pytest.mark.parametrize("raw", ["mesh", "/mesh space", "//", "/a//b"])
def test_invalid_namespace_is_rejected(raw):
    with pytest.raises(ConfigError):
        MeshConfig.from_env({"MESH_NAMESPACE": raw})


def test_trailing_slash_of_namespace_is_dropped():
    assert MeshConfig.from_env({"MESH_NAMESPACE": "/mesh/"}).namespace == "/mesh"


def test_service_prefix_ends_with_slash():
    config = MeshConfig.from_env({})

    assert config.service_prefix("counter") == "/mesh/services/counter/"
    assert not config.service_prefix("counter2").startswith(
        config.service_prefix("counter")
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]"])
def test_wildcard_advertise_host_is_rejected(host):
    with pytest.raises(AdvertiseAddressError) as caught:
        validate_advertise_host(host)

    assert "wildcard" in str(caught.value)


def test_port_zero_cannot_be_advertised():
    with pytest.raises(AdvertiseAddressError):
        format_address("127.0.0.1", 0)


def test_ipv6_address_is_bracketed():
    assert format_address("::1", 50051) == "[::1]:50051"


@pytest.fixture
def no_dns(monkeypatch):
    """Fail every name lookup at once, so that no test sends a DNS query."""

    def fail(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, f"{host} not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)


def test_unresolvable_member_is_left_out(no_dns):
    config = MeshConfig.from_env(
        {}, etcd_endpoints="http://no-such-host.invalid:2379,http://127.0.0.1:2379"
    )

    assert _client_endpoints(config) == ["127.0.0.1:2379"]
    assert detect_advertise_host(config.etcd_endpoints) == "127.0.0.1"


def test_no_resolvable_member_names_the_variable(no_dns):
    config = MeshConfig.from_env({}, etcd_endpoints="http://no-such-host.invalid:2379")

    with pytest.raises(ConfigError, match="MESH_ETCD_ENDPOINTS"):
        _client_endpoints(config)
