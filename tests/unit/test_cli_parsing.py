"""meshctl argument parsing, service aliases and formatting helpers."""

from __future__ import annotations

import pytest

from registry import cli
from registry.cli_common import (
    COUNTER_SERVICE,
    USER_SERVICE,
    decode_key_value,
    format_age,
    resolve_service,
    watched_prefix,
)
from registry.cli_ls import format_lease_left
from registry.config import MeshConfig
from registry.errors import ConfigError
from registry.etcd import KeyValue
from registry.model import InstanceInfo, RecordError, encode_record

CONFIG = MeshConfig.from_env({}, namespace="/m")


def parse(*argv: str):
    return cli.build_parser().parse_args(argv)


@pytest.mark.parametrize(
    ("alias", "service"),
    [
        ("counter", COUNTER_SERVICE),
        ("counter_svc", COUNTER_SERVICE),
        ("user", USER_SERVICE),
        ("user_svc", USER_SERVICE),
        ("mesh.other.v1.Thing", "mesh.other.v1.Thing"),
        ("unknown", "unknown"),
    ],
)
def test_resolve_service_alias(alias, service):
    assert resolve_service(alias) == service


@pytest.mark.parametrize("name", ["", "/", "a/b"])
def test_resolve_service_rejects_paths(name):
    with pytest.raises(ConfigError, match="invalid service name"):
        resolve_service(name)


def test_watched_prefix_ends_with_slash():
    assert watched_prefix(CONFIG, "counter") == f"/m/services/{COUNTER_SERVICE}/"
    assert watched_prefix(CONFIG, None) == "/m/services/"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (-5, "0s"),
        (42.9, "42s"),
        (185, "3m05s"),
        (7380, "2h03m"),
        (352800, "4d02h"),
    ],
)
def test_format_age(seconds, text):
    assert format_age(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "no lease"), (-1, "expired"), (7, "7s")]
)
def test_format_lease_left(seconds, text):
    assert format_lease_left(seconds) == text


def key_value(key: str, value: bytes) -> KeyValue:
    return KeyValue(key, value, create_revision=3, mod_revision=4, version=1, lease=9)


def test_decode_key_value_takes_service_from_key():
    value = encode_record("127.0.0.1:5000", InstanceInfo("i1", version="2.0"))

    endpoint = decode_key_value(
        CONFIG, key_value(f"/m/services/{USER_SERVICE}/i1", value)
    )

    assert endpoint.service == USER_SERVICE
    assert endpoint.instance_id == "i1"
    assert endpoint.address == "127.0.0.1:5000"
    assert endpoint.lease == 9
    assert endpoint.mod_revision == 4


@pytest.mark.parametrize(
    "key", ["/m/services/only-service", "/m/services/a/b/c", "/m/services//i1"]
)
def test_decode_key_value_rejects_bad_keys(key):
    value = encode_record("127.0.0.1:5000", InstanceInfo("i1"))

    with pytest.raises(RecordError, match="is not <namespace>"):
        decode_key_value(CONFIG, key_value(key, value))


def test_global_options_before_subcommand():
    args = parse("--etcd-endpoints", "http://127.0.0.1:1", "--namespace", "/x", "ls")

    assert args.etcd_endpoints == "http://127.0.0.1:1"
    assert args.namespace == "/x"


def test_global_options_after_subcommand():
    args = parse("ls", "--namespace", "/y", "counter", "--json")

    assert args.namespace == "/y"
    assert args.etcd_endpoints is None
    assert args.service == "counter"
    assert args.json


def test_option_after_subcommand_wins():
    args = parse("--namespace", "/x", "watch", "--namespace", "/y")

    assert args.namespace == "/y"


def test_up_defaults():
    args = parse("up")

    assert (args.counter, args.user, args.front_port) == (2, 2, 8080)


def test_etcd_defaults():
    args = parse("etcd")

    assert args.port == 2379
    assert str(args.data_dir) == ".mesh/etcd"


@pytest.mark.parametrize(
    "argv",
    [
        ("up", "--front-port", "0"),
        ("up", "--front-port", "70000"),
        ("up", "--front-port", "http"),
        ("up", "--counter", "-1"),
        ("up", "--user", "many"),
        ("up", "--ready-timeout", "0"),
        ("etcd", "--port", "-3"),
        ("nonsense",),
        (),
    ],
)
def test_invalid_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as raised:
        parse(*argv)

    assert raised.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_main_reports_config_error_in_one_line(capsys):
    status = cli.main(["--namespace", "no slash", "ls"])

    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith("meshctl: MESH_NAMESPACE: invalid namespace")


def test_main_reports_bad_service_in_one_line(capsys):
    status = cli.main(["ls", "a/b"])

    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert "invalid service name 'a/b'" in err
