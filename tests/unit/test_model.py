"""Registration records in etcd's gRPC naming JSON."""

from __future__ import annotations

import json

import pytest

from registry.model import InstanceInfo, RecordError, decode_record, encode_record

KEY = "/mesh/services/svc/i-1"


def test_metadata_is_written_as_json_string():
    record = json.loads(encode_record("10.0.0.5:50051", InstanceInfo("i-1", zone="z1")))

    assert record["Op"] == 0
    assert record["Addr"] == "10.0.0.5:50051"
    assert isinstance(record["Metadata"], str)
    assert json.loads(record["Metadata"])["zone"] == "z1"


def test_metadata_holds_required_attributes():
    info = InstanceInfo("i-1", version="1.2.3", zone="z", weight=7, start_time=5.0)

    metadata = json.loads(json.loads(encode_record("h:1", info))["Metadata"])

    assert metadata == {
        "id": "i-1",
        "version": "1.2.3",
        "zone": "z",
        "weight": 7,
        "start_time": 5.0,
    }


def test_round_trip_keeps_attributes():
    info = InstanceInfo("i-1", version="2", zone="z", weight=3, start_time=9.5)

    endpoint = decode_record("svc", KEY, encode_record("h:1", info))

    assert endpoint.info == info
    assert endpoint.address == "h:1"


@pytest.mark.parametrize(
    "value",
    [
        b'{"Op":0,"Addr":"1.2.3.4:80","Metadata":null}',
        b'{"Addr":"1.2.3.4:80"}',
        b'{"Op":0,"Addr":"1.2.3.4:80","Metadata":{"version":"9"}}',
        b'{"Op":0,"Addr":"1.2.3.4:80","Metadata":"free text from Go"}',
    ],
)
def test_values_written_by_go_clients_are_accepted(value):
    endpoint = decode_record("svc", KEY, value)

    assert endpoint.address == "1.2.3.4:80"
    assert endpoint.instance_id == "i-1"


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[]",
        b'{"Op":1,"Addr":"1.2.3.4:80"}',
        b'{"Op":0}',
        b'{"Op":0,"Addr":"no-port"}',
        b'{"Op":0,"Addr":"h:0"}',
        b'{"Op":0,"Addr":"h:1","Metadata":5}',
        b"\xff\xfe",
    ],
)
def test_invalid_values_raise_record_error(value):
    with pytest.raises(RecordError):
        decode_record("svc", KEY, value)
