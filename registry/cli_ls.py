"""`meshctl ls`: the registered instances, read directly from etcd."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from registry.cli_common import (
    age_of,
    echo,
    format_age,
    list_endpoints,
    open_etcd,
    sort_endpoints,
    stdout_console,
    warn,
    watched_prefix,
)

if TYPE_CHECKING:
    from registry.config import MeshConfig
    from registry.etcd import EtcdClient
    from registry.model import Endpoint


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One line of `meshctl ls`: an instance with its lease time left."""

    endpoint: Endpoint
    # Seconds left on the key's lease: None without a lease, -1 once expired.
    lease_time_left: int | None
    age: float | None

    def to_json(self) -> dict[str, Any]:
        endpoint = self.endpoint
        info = endpoint.info
        return {
            "service": endpoint.service,
            "instance_id": endpoint.instance_id,
            "address": endpoint.address,
            "version": info.version,
            "zone": info.zone,
            "weight": info.weight,
            "start_time": info.start_time or None,
            "age_seconds": None if self.age is None else round(self.age, 3),
            "lease_id": f"{endpoint.lease:x}" if endpoint.lease else None,
            "lease_time_left": self.lease_time_left,
            "key": endpoint.key,
            "mod_revision": endpoint.mod_revision,
            "metadata": info.extra,
        }


async def run_ls(config: MeshConfig, service: str | None, *, as_json: bool) -> int:
    prefix = watched_prefix(config, service)
    async with open_etcd(config) as client:
        endpoints, _revision = await list_endpoints(client, config, prefix)
        rows = await describe_instances(client, sort_endpoints(endpoints))
    if as_json:
        echo(json.dumps([row.to_json() for row in rows], indent=2))
        return 0
    if not rows:
        warn(f"no instances registered under {prefix}")
        return 0
    stdout_console().print(render_table(rows))
    return 0


async def describe_instances(
    client: EtcdClient, endpoints: list[Endpoint]
) -> list[InstanceRow]:
    """Attach the lease time left and the age to each endpoint."""
    leases = sorted({endpoint.lease for endpoint in endpoints if endpoint.lease})
    left = await asyncio.gather(*(client.lease_time_left(lease) for lease in leases))
    time_left = dict(zip(leases, left, strict=True))
    now = time.time()
    return [
        InstanceRow(
            endpoint=endpoint,
            lease_time_left=time_left.get(endpoint.lease),
            age=age_of(endpoint, now),
        )
        for endpoint in endpoints
    ]


def render_table(rows: list[InstanceRow]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("SERVICE", "INSTANCE", "ADDRESS", "VERSION", "ZONE"):
        table.add_column(column, no_wrap=True)
    table.add_column("LEASE LEFT", justify="right", no_wrap=True)
    table.add_column("AGE", justify="right", no_wrap=True)
    for row in rows:
        endpoint = row.endpoint
        # Text cells: values from etcd must not be read as rich markup.
        cells = (
            endpoint.service,
            endpoint.instance_id,
            endpoint.address,
            endpoint.info.version,
            endpoint.info.zone,
            format_lease_left(row.lease_time_left),
            format_age(row.age),
        )
        table.add_row(*(Text(cell) for cell in cells))
    return table


def format_lease_left(seconds: int | None) -> str:
    if seconds is None:
        return "no lease"
    if seconds < 0:
        return "expired"
    return f"{seconds}s"
