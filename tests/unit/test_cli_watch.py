"""meshctl watch: turning watch batches and re-lists into printed changes."""

from __future__ import annotations

import json

from registry.cli_common import COUNTER_SERVICE
from registry.cli_watch import Change, apply_batch, diff_states
from registry.config import MeshConfig
from registry.etcd import KeyValue, WatchBatch, WatchEvent
from registry.model import Endpoint, InstanceInfo, encode_record

CONFIG = MeshConfig.from_env({}, namespace="/m")
PREFIX = f"/m/services/{COUNTER_SERVICE}/"


def endpoint(instance_id: str, port: int, revision: int = 1) -> Endpoint:
    return Endpoint(
        service=COUNTER_SERVICE,
        instance_id=instance_id,
        address=f"127.0.0.1:{port}",
        info=InstanceInfo(instance_id, start_time=1.0),
        key=PREFIX + instance_id,
        lease=7,
        mod_revision=revision,
    )


def put(instance_id: str, port: int, revision: int) -> WatchEvent:
    value = encode_record(
        f"127.0.0.1:{port}", InstanceInfo(instance_id, start_time=1.0)
    )
    kv = KeyValue(PREFIX + instance_id, value, revision, revision, 1, 7)
    return WatchEvent("put", kv)


def delete(instance_id: str, revision: int) -> WatchEvent:
    return WatchEvent("delete", KeyValue(PREFIX + instance_id, b"", 0, revision, 0, 0))


def test_put_of_new_key_is_added():
    state: dict[str, Endpoint] = {}

    changes = apply_batch(CONFIG, state, WatchBatch(5, (put("a", 5000, 5),)))

    assert [(c.kind, c.endpoint.instance_id, c.revision) for c in changes] == [
        ("added", "a", 5)
    ]
    assert list(state) == [PREFIX + "a"]


def test_put_of_known_key_is_updated():
    state = {PREFIX + "a": endpoint("a", 5000)}

    changes = apply_batch(CONFIG, state, WatchBatch(6, (put("a", 5001, 6),)))

    assert [c.kind for c in changes] == ["updated"]
    assert changes[0].endpoint.address == "127.0.0.1:5001"


def test_delete_reports_removed_instance_and_address():
    state = {PREFIX + "a": endpoint("a", 5000)}

    changes = apply_batch(CONFIG, state, WatchBatch(8, (delete("a", 8),)))

    assert [(c.kind, c.endpoint.address, c.revision) for c in changes] == [
        ("removed", "127.0.0.1:5000", 8)
    ]
    assert state == {}


def test_delete_of_unknown_key_is_silent():
    changes = apply_batch(CONFIG, {}, WatchBatch(8, (delete("ghost", 8),)))

    assert changes == []


def test_garbage_value_removes_known_instance(capsys):
    state = {PREFIX + "a": endpoint("a", 5000)}
    garbage = WatchEvent("put", KeyValue(PREFIX + "a", b"not json", 2, 9, 2, 0))

    changes = apply_batch(CONFIG, state, WatchBatch(9, (garbage,)))

    assert [c.kind for c in changes] == ["removed"]
    assert state == {}
    assert "skipping" in capsys.readouterr().err


def test_batch_keeps_event_order_and_revisions():
    state: dict[str, Endpoint] = {}
    batch = WatchBatch(12, (put("a", 5000, 10), put("b", 5001, 11), delete("a", 12)))

    changes = apply_batch(CONFIG, state, batch)

    assert [(c.kind, c.endpoint.instance_id, c.revision) for c in changes] == [
        ("added", "a", 10),
        ("added", "b", 11),
        ("removed", "a", 12),
    ]


def test_relist_diff_finds_removed_added_updated():
    old = {PREFIX + "a": endpoint("a", 5000), PREFIX + "b": endpoint("b", 5001)}
    new = {PREFIX + "b": endpoint("b", 5009, 20), PREFIX + "c": endpoint("c", 5002)}

    changes = diff_states(old, new, 30)

    assert sorted((c.kind, c.endpoint.instance_id) for c in changes) == [
        ("added", "c"),
        ("removed", "a"),
        ("updated", "b"),
    ]
    assert {c.revision for c in changes} == {30}


def test_relist_diff_of_equal_states_is_empty():
    state = {PREFIX + "a": endpoint("a", 5000)}

    assert diff_states(state, dict(state), 3) == []


def test_change_line_format():
    line = Change("added", endpoint("a", 5000), 123).to_line()

    assert line == f"+ added    {COUNTER_SERVICE}  a  127.0.0.1:5000  rev=123"


def test_change_json_fields():
    body = json.loads(Change("removed", endpoint("a", 5000), 9).to_json())

    assert body["event"] == "removed"
    assert body["service"] == COUNTER_SERVICE
    assert body["instance_id"] == "a"
    assert body["address"] == "127.0.0.1:5000"
    assert body["revision"] == 9
