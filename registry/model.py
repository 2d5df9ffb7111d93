"""Registration records: the value stored under each instance key.

The value uses etcd's gRPC naming JSON, so that a Go client using etcd's own
resolver (`etcd:///<namespace>/services/<name>/`) finds the same endpoints:

    {"Op":0,"Addr":"10.0.0.5:50051","Metadata":"{\"id\":\"...\",...}"}

`Metadata` is written as a JSON *string*. Go clients that use etcd's resolver
with round robin panic on an object, because the resolver puts Metadata into
a gRPC address attribute that must be comparable: "comparing uncomparable type
map[string]interface {}" in current grpc-go, "hash of unhashable type
map[string]interface {}" in Debian's grpc-go 1.33 (tests/interop shows it). The reader also accepts what etcd's Go
`endpoints.Manager` writes (Metadata null or missing) and an object.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

# gRPC metadata key under which servers name the instance that served a call.
INSTANCE_METADATA_KEY = "mesh-instance"


class RecordError(ValueError):
    """A stored value is not a valid registration record."""


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """Attributes of one running instance, stored in Metadata."""

    instance_id: str
    version: str = "0.0.0"
    zone: str = "local"
    weight: int = 100
    start_time: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "id": self.instance_id,
            "version": self.version,
            "zone": self.zone,
            "weight": self.weight,
            "start_time": round(self.start_time, 3),
        }
        body.update(self.extra)
        return json.dumps(body, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One registered instance of a service, as discovery reports it."""

    service: str
    instance_id: str
    address: str
    info: InstanceInfo
    key: str = ""
    lease: int = 0
    mod_revision: int = 0


def encode_record(address: str, info: InstanceInfo) -> bytes:
    """Return the JSON value to store for one instance."""
    record = {"Op": 0, "Addr": address, "Metadata": info.to_json()}
    return json.dumps(record, separators=(",", ":")).encode()


def decode_record(
    service: str,
    key: str,
    value: bytes,
    *,
    lease: int = 0,
    mod_revision: int = 0,
) -> Endpoint:
    """Parse a stored value; the instance id defaults to the last key segment.

    Raises RecordError when the value is not a usable record.
    """
    try:
        record = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"value under {key!r} is not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise RecordError(f"value under {key!r} is not a JSON object")
    op = record.get("Op", 0)
    if op != 0:
        raise RecordError(f"value under {key!r} has Op={op!r}; only 0 (add) is used")
    address = record.get("Addr")
    if not isinstance(address, str) or not _looks_like_address(address):
        raise RecordError(f"value under {key!r} has no valid Addr: {address!r}")

    metadata = _parse_metadata(key, record.get("Metadata"))
    key_id = key.rsplit("/", 1)[-1]
    info = _info_from_metadata(key_id, metadata)
    return Endpoint(
        service=service,
        instance_id=info.instance_id,
        address=address,
        info=info,
        key=key,
        lease=lease,
        mod_revision=mod_revision,
    )


def _parse_metadata(key: str, raw: object) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        if not raw:
            return {}
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            # A Go client may store any string; keep it without failing.
            return {"text": raw}
        return parsed if isinstance(parsed, dict) else {"value": parsed}
    raise RecordError(
        f"value under {key!r} has Metadata of type {type(raw).__name__}; "
        "expected a JSON string, an object or null"
    )


def _info_from_metadata(key_id: str, metadata: dict[str, Any]) -> InstanceInfo:
    known = {"id", "version", "zone", "weight", "start_time"}
    weight = metadata.get("weight", 100)
    start_time = metadata.get("start_time", 0.0)
    return InstanceInfo(
        instance_id=str(metadata.get("id") or key_id),
        version=str(metadata.get("version", "unknown")),
        zone=str(metadata.get("zone", "unknown")),
        weight=weight if isinstance(weight, int) and weight > 0 else 100,
        start_time=float(start_time) if isinstance(start_time, int | float) else 0.0,
        extra={k: v for k, v in metadata.items() if k not in known},
    )


def _looks_like_address(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)
