"""Output of `meshctl up`: the readiness wait, the URLs and the live status."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from registry.cli_common import (
    COUNTER_SERVICE,
    age_of,
    echo,
    format_age,
    list_endpoints,
    sort_endpoints,
)
from registry.cli_watch import diff_states
from registry.errors import MeshError
from registry.etcd_process import port_is_open
from registry.supervisor import ChildState, Supervisor, SupervisorError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from rich.console import Console, RenderableType

    from registry.config import MeshConfig
    from registry.etcd import EtcdClient
    from registry.model import Endpoint

logger = logging.getLogger(__name__)

# Seconds between two reads of the services prefix.
POLL_INTERVAL = 0.3
REFRESH_INTERVAL = 1.0


class StatusView:
    """Reads discovery from etcd and shows it with the state of the children."""

    def __init__(
        self,
        client: EtcdClient,
        config: MeshConfig,
        supervisor: Supervisor,
        console: Console,
    ) -> None:
        self._client = client
        self._config = config
        self._supervisor = supervisor
        self._console = console
        self._endpoints: dict[str, Endpoint] = {}
        self._etcd_error = ""

    async def wait_ready(
        self,
        baseline: Mapping[str, Endpoint],
        expected: Mapping[str, int],
        front_port: int,
        timeout: float,
        ingress_port: int | None = None,
    ) -> dict[str, Endpoint]:
        """Wait for the expected new instances, the front and the ingress.

        Returns the instances that were not in baseline once each service has
        its expected count and the front accepts connections. Raises
        SupervisorError when a child has failed for good, or on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._endpoints, _ = await list_endpoints(
                self._client, self._config, self._config.services_prefix(), quiet=True
            )
            fresh = {k: v for k, v in self._endpoints.items() if k not in baseline}
            counts = Counter(endpoint.service for endpoint in fresh.values())
            missing = {
                service: (counts[service], wanted)
                for service, wanted in expected.items()
                if counts[service] < wanted
            }
            front_open = port_is_open("127.0.0.1", front_port, timeout=0.2)
            ingress_open = ingress_port is None or port_is_open(
                "127.0.0.1", ingress_port, timeout=0.2
            )
            if not missing and front_open and ingress_open:
                return fresh
            self._raise_on_failed_child()
            if time.monotonic() >= deadline:
                waiting = [
                    f"{s}: {n} of {w} registered" for s, (n, w) in missing.items()
                ]
                if not front_open:
                    waiting.append(f"front: nothing listens on port {front_port}")
                if not ingress_open:
                    waiting.append(f"ingress: nothing listens on port {ingress_port}")
                msg = (
                    f"timed out after {timeout:.0f} s waiting for the mesh "
                    f"({'; '.join(waiting)}); see the logs in "
                    f"{self._supervisor.children[0].spec.log_path.parent}"
                )
                raise SupervisorError(msg)
            await asyncio.sleep(POLL_INTERVAL)

    def _raise_on_failed_child(self) -> None:
        for child in self._supervisor.children:
            if child.state is ChildState.FAILED:
                msg = f"{child.spec.name} failed to start; see {child.spec.log_path}"
                raise SupervisorError(msg)

    async def show(self) -> None:
        """Show the status until cancelled.

        On a terminal this is a live table. Otherwise each change in discovery
        is printed as one line.
        """
        if not self._console.is_terminal:
            await self._print_changes()
            return
        try:
            with Live(
                self.render(),
                console=self._console,
                auto_refresh=False,
                transient=True,
            ) as live:
                while True:
                    await asyncio.sleep(REFRESH_INTERVAL)
                    await self._refresh()
                    live.update(self.render(), refresh=True)
        except OSError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Live failed to clear a closed terminal while being cancelled.
                raise asyncio.CancelledError from exc
            # The terminal went away. The children keep running until a
            # signal stops them.
            logger.info("live status stopped: %s", exc)
            await asyncio.Future()

    async def _refresh(self) -> None:
        try:
            self._endpoints, _ = await list_endpoints(
                self._client, self._config, self._config.services_prefix(), quiet=True
            )
        except MeshError as exc:
            # Keep the last known instances on screen, marked as stale.
            self._etcd_error = str(exc)
        else:
            self._etcd_error = ""

    async def _print_changes(self) -> None:
        known = dict(self._endpoints)
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            await self._refresh()
            for change in diff_states(known, self._endpoints, 0):
                endpoint = change.endpoint
                echo(
                    f"{change.kind} {endpoint.service} {endpoint.instance_id} "
                    f"{endpoint.address}"
                )
            known = dict(self._endpoints)

    def render(self) -> RenderableType:
        parts: list[RenderableType] = [self._instances_table(), self._children_table()]
        if self._etcd_error:
            parts.append(Text(f"etcd: {self._etcd_error}", style="red"))
        parts.append(Text("press Ctrl-C to stop", style="dim"))
        return Group(*parts)

    def _instances_table(self) -> Table:
        table = Table(title="discovery", title_justify="left", box=None, pad_edge=False)
        for column in ("SERVICE", "INSTANCE", "ADDRESS"):
            table.add_column(column, no_wrap=True)
        table.add_column("AGE", justify="right", no_wrap=True)
        now = time.time()
        for endpoint in sort_endpoints(self._endpoints):
            age = format_age(age_of(endpoint, now))
            cells = (endpoint.service, endpoint.instance_id, endpoint.address, age)
            table.add_row(*(Text(cell) for cell in cells))
        return table

    def _children_table(self) -> Table:
        table = Table(title="processes", title_justify="left", box=None, pad_edge=False)
        for column in ("NAME", "PID", "STATE", "RESTARTS", "LOG"):
            table.add_column(column, no_wrap=True)
        for child in self._supervisor.children:
            style = "red" if child.state is ChildState.FAILED else ""
            table.add_row(
                Text(child.spec.name),
                Text(str(child.pid)),
                Text(child.state.value, style=style),
                Text(str(child.restarts)),
                Text(display_path(child.spec.log_path)),
            )
        return table


def grpcurl_command(
    endpoints: Mapping[str, Endpoint], flags: str = "-plaintext"
) -> str | None:
    """Return a grpcurl call of Increment on one counter instance, if any."""
    counters = [
        e for e in sort_endpoints(dict(endpoints)) if e.service == COUNTER_SERVICE
    ]
    if not counters:
        return None
    return (
        f'{grpcurl_program()} {flags} -d \'{{"name":"demo","delta":1}}\' '
        f"{counters[0].address} {COUNTER_SERVICE}/Increment"
    )


def grpcurl_program() -> str:
    """Return the path of the grpcurl next to Python, or `grpcurl` for PATH.

    The dev extras install grpcurl in .venv/bin, next to the venv's Python.
    """
    beside_python = Path(sys.executable).parent / "grpcurl"
    if beside_python.exists():
        return display_path(beside_python)
    return "grpcurl"


def display_path(path: Path) -> str:
    """Return path relative to the current directory when it is inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def ready_message(
    front_port: int,
    fresh: Mapping[str, Endpoint],
    logs: Path,
    ingress_port: int | None = None,
    *,
    flags: str = "-plaintext",
    instance_flags: str | None = None,
) -> str:
    """Return the lines printed once the mesh is up.

    flags are grpcurl's TLS flags for the ingress, and instance_flags those
    for a counter instance (default: flags).
    """
    base = f"http://127.0.0.1:{front_port}"
    lines = [
        "mesh is up:",
        f"  page       {base}/",
        f"  mesh view  {base}/mesh",
        f"  API docs   {base}/docs",
        f"  logs       {display_path(logs)}/",
    ]
    if ingress_port is not None:
        ingress = f"127.0.0.1:{ingress_port}"
        lines += [
            f"call any service through the ingress at {ingress}:",
            f"  {grpcurl_program()} {flags} {ingress} list",
            (
                f'  {grpcurl_program()} {flags} -d \'{{"name":"demo","delta":1}}\' '
                f"{ingress} {COUNTER_SERVICE}/Increment"
            ),
        ]
    command = grpcurl_command(fresh, instance_flags or flags)
    if command:
        lines += ["call one counter instance directly:", f"  {command}"]
    return "\n".join(lines)
