"""meshctl scale: argument parsing, replica counts and the supervisor record."""

from __future__ import annotations

import pytest

from registry.cli import main
from registry.cli_common import COUNTER_SERVICE
from registry.cli_scale import parse_assignments
from registry.errors import ConfigError
from registry.replicas import (
    MAX_REPLICAS,
    SupervisorRecord,
    find_group,
    parse_replica_count,
)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["counter_svc=5"], {"counter_svc": 5}),
        (["counter=0", "user=3"], {"counter_svc": 0, "user_svc": 3}),
        ([f"{COUNTER_SERVICE}=64"], {"counter_svc": 64}),
        (["user_svc= 2 "], {"user_svc": 2}),
    ],
)
def test_assignments_parse(items, expected):
    assert parse_assignments(items) == expected


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("counter_svc=-1", "invalid replica count '-1' in 'counter_svc=-1'"),
        ("counter_svc=abc", "invalid replica count 'abc' in 'counter_svc=abc'"),
        ("counter_svc=65", "use a whole number from 0 to 64"),
        ("counter_svc=", "invalid replica count '' in 'counter_svc='"),
        ("counter_svc=2.5", "invalid replica count '2.5'"),
        ("counter_svc=\u00b2", "invalid replica count"),
        ("foo=2", "unknown service 'foo' in 'foo=2'"),
        ("front=2", "the services that scale are counter_svc and user_svc"),
        ("counter_svc", "invalid argument 'counter_svc': use SERVICE=COUNT"),
    ],
)
def test_bad_assignment_names_value(item, fragment):
    with pytest.raises(ConfigError, match=r"^scale: ") as raised:
        parse_assignments([item])

    assert fragment in str(raised.value)


def test_repeated_service_rejected():
    with pytest.raises(ConfigError, match="counter_svc is given twice"):
        parse_assignments(["counter_svc=1", "counter=2"])


def test_replica_count_bounds():
    assert parse_replica_count("0") == 0
    assert parse_replica_count(str(MAX_REPLICAS)) == MAX_REPLICAS
    with pytest.raises(ValueError, match="from 0 to 64"):
        parse_replica_count(str(MAX_REPLICAS + 1))


def test_group_names_map_to_module():
    assert find_group("counter") is find_group("counter_svc")
    assert find_group(COUNTER_SERVICE) is find_group("counter_svc")
    assert find_group("front") is None


def test_supervisor_record_round_trip():
    record = SupervisorRecord(pid=42, host="box", started=1.5)

    assert SupervisorRecord.decode(record.encode()) == record
    assert SupervisorRecord.decode(b"not json") is None
    assert SupervisorRecord.decode(b'{"pid": 1}') is None
    assert record.describe() == "meshctl up (pid 42 on box)"


@pytest.mark.parametrize("argument", ["counter_svc=-1", "foo=2", "counter_svc=99"])
def test_cli_bad_argument_is_one_line_exit_2(argument, capsys):
    # Parsing happens before any etcd request, so no etcd is needed here.
    status = main(["scale", argument, "--etcd-endpoints", "http://127.0.0.1:1"])

    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith("meshctl: scale: ")
    assert argument in err


def test_cli_scale_needs_an_argument(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["scale"])

    assert raised.value.code == 2
    assert "SERVICE=N" in capsys.readouterr().err
