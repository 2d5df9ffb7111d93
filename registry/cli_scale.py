"""`meshctl scale`: store new replica counts for the running `meshctl up`.

    meshctl scale counter_svc=5 user_svc=1

Each count is written to `<namespace>/control/replicas/<group>` in one
transaction. The `meshctl up` that owns `<namespace>/control/supervisor`
watches these keys and starts or drains replicas until the counts match.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from registry.cli_common import echo, open_etcd, warn
from registry.errors import ConfigError
from registry.etcd import op_get, op_put
from registry.replicas import (
    GROUPS,
    MAX_REPLICAS,
    describe_holder,
    find_group,
    parse_replica_count,
    replicas_prefix,
    supervisor_key,
)

if TYPE_CHECKING:
    from registry.config import MeshConfig
    from registry.etcd import KeyValue

_GROUP_LIST = " and ".join(sorted(GROUPS))


def parse_assignments(items: Sequence[str]) -> dict[str, int]:
    """Parse SERVICE=COUNT arguments into counts by group name.

    Raises ConfigError naming the argument that is malformed, names an
    unknown service, has an invalid count, or repeats a service.
    """
    counts: dict[str, int] = {}
    for item in items:
        name, separator, raw_count = item.partition("=")
        if not separator:
            msg = f"invalid argument {item!r}: use SERVICE=COUNT, such as counter_svc=3"
            raise ConfigError("scale", msg)
        group = find_group(name)
        if group is None:
            msg = (
                f"unknown service {name!r} in {item!r}: "
                f"the services that scale are {_GROUP_LIST}"
            )
            raise ConfigError("scale", msg)
        try:
            count = parse_replica_count(raw_count)
        except ValueError:
            msg = (
                f"invalid replica count {raw_count!r} in {item!r}: "
                f"use a whole number from 0 to {MAX_REPLICAS}"
            )
            raise ConfigError("scale", msg) from None
        if group.name in counts:
            msg = f"{group.name} is given twice; give each service once"
            raise ConfigError("scale", msg)
        counts[group.name] = count
    return counts


async def run_scale(config: MeshConfig, items: Sequence[str]) -> int:
    """Write the counts, print the old and new ones, and name who applies them."""
    counts = parse_assignments(items)
    prefix = replicas_prefix(config)
    async with open_etcd(config) as client:
        # One transaction reads the old counts and the supervisor key and
        # writes the new counts, so the output matches what was replaced.
        reads = [op_get(prefix + name) for name in counts]
        reads.append(op_get(supervisor_key(config)))
        writes = [op_put(prefix + name, str(count)) for name, count in counts.items()]
        result = await client.txn([], [*reads, *writes])
    *old_values, holder = result.ranges
    for (name, count), old in zip(counts.items(), old_values, strict=True):
        noun = "replica" if count == 1 else "replicas"
        echo(f"{name}: {count} {noun} (was {_describe_old(old)})")
    if holder:
        echo(f"{describe_holder(holder[0].value)} applies the new counts")
    else:
        warn(
            f"no meshctl up is running in namespace {config.namespace!r}, so no "
            "replica starts or stops now. The counts are stored, and the next "
            "meshctl up replaces them with its --counter and --user values."
        )
    return 0


def _describe_old(old: tuple[KeyValue, ...]) -> str:
    if not old:
        return "not set"
    return old[0].value.decode(errors="replace")
