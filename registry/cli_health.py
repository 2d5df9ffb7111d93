"""`meshctl health`: the grpc.health.v1 status of every registered instance."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table
from rich.text import Text

from registry.cli_common import (
    list_endpoints,
    open_etcd,
    sort_endpoints,
    stdout_console,
    warn,
    watched_prefix,
)
from registry.mesh_tls import ChannelFactory, MeshTls

if TYPE_CHECKING:
    from registry.config import MeshConfig
    from registry.model import Endpoint

# Seconds each Health/Check call may take before the instance counts as
# unreachable.
CHECK_TIMEOUT = 2.0

SERVING = "SERVING"
UNREACHABLE = "UNREACHABLE"


@dataclass(frozen=True, slots=True)
class HealthResult:
    """The health of one instance, with the error when the call failed."""

    endpoint: Endpoint
    status: str
    detail: str = ""


async def check_instance(
    endpoint: Endpoint, timeout: float, tls: MeshTls | None = None
) -> HealthResult:
    """Call Health/Check for the instance's service, over mTLS when tls is set."""
    request = health_pb2.HealthCheckRequest(service=endpoint.service)
    if tls is None:
        channel = grpc.aio.insecure_channel(endpoint.address)
    else:
        channel = ChannelFactory(tls, endpoint.service)(endpoint.address, ())
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                # The server is up but has no health status for this service.
                return HealthResult(endpoint, "SERVICE_UNKNOWN", exc.details() or "")
            detail = f"{exc.code().name}: {exc.details()}"
            return HealthResult(endpoint, UNREACHABLE, detail)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return HealthResult(endpoint, str(status))


async def run_health(config: MeshConfig, service: str | None) -> int:
    """Print a health table; return 0 when every instance is SERVING, else 1."""
    prefix = watched_prefix(config, service)
    async with open_etcd(config) as client:
        endpoints, _revision = await list_endpoints(client, config, prefix)
    if not endpoints:
        warn(f"no instances registered under {prefix}")
        return 1
    results = await asyncio.gather(
        *(
            check_instance(endpoint, CHECK_TIMEOUT, config.tls)
            for endpoint in sort_endpoints(endpoints)
        )
    )
    stdout_console().print(render_table(results))
    return 0 if all(result.status == SERVING for result in results) else 1


def render_table(results: list[HealthResult]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("SERVICE", "INSTANCE", "ADDRESS", "STATUS"):
        table.add_column(column, no_wrap=True)
    # The error column appears only when a call failed.
    with_detail = any(result.detail for result in results)
    if with_detail:
        table.add_column("DETAIL")
    for result in results:
        endpoint = result.endpoint
        style = "green" if result.status == SERVING else "red"
        cells = [
            Text(endpoint.service),
            Text(endpoint.instance_id),
            Text(endpoint.address),
            Text(result.status, style=style),
        ]
        if with_detail:
            cells.append(Text(result.detail))
        table.add_row(*cells)
    return table
