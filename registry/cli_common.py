"""Helpers shared by the meshctl commands: service names, listing, signals."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console

from registry.errors import ConfigError
from registry.etcd import EtcdClient
from registry.model import Endpoint, RecordError, decode_record

if TYPE_CHECKING:
    from registry.config import MeshConfig
    from registry.etcd import KeyValue

T = TypeVar("T")

# Timeout of each etcd request that a CLI command sends, in seconds. It is
# short so that a dead etcd gives an error at once instead of a hang.
CLI_ETCD_TIMEOUT = 3.0

COUNTER_SERVICE = "mesh.counter.v1.CounterService"
USER_SERVICE = "mesh.user.v1.UserService"

# Short names accepted wherever a full proto service name is expected.
SERVICE_ALIASES = {
    "counter": COUNTER_SERVICE,
    "counter_svc": COUNTER_SERVICE,
    "user": USER_SERVICE,
    "user_svc": USER_SERVICE,
}


def resolve_service(name: str) -> str:
    """Return the full service name for an alias, and other names unchanged.

    Raises ConfigError for an empty name or one that contains '/'.
    """
    service = name.strip().strip("/")
    if not service or "/" in service:
        raise ConfigError(
            "SERVICE",
            f"invalid service name {name!r}; use a full proto name such as "
            f"{COUNTER_SERVICE} or an alias ({', '.join(sorted(SERVICE_ALIASES))})",
        )
    return SERVICE_ALIASES.get(service, service)


def watched_prefix(config: MeshConfig, service: str | None) -> str:
    """Return the prefix of one service, or of every service when None."""
    if service is None:
        return config.services_prefix()
    return config.service_prefix(resolve_service(service))


def open_etcd(config: MeshConfig) -> EtcdClient:
    """Return an etcd client with the short timeout used by CLI commands."""
    return EtcdClient(config, timeout=CLI_ETCD_TIMEOUT)


def stdout_console() -> Console:
    """Return a console for tables on stdout.

    When stdout is not a terminal, the console is 250 columns wide, so that
    piped output keeps long names on one line.
    """
    console = Console()
    if console.is_terminal:
        return console
    return Console(width=250)


def echo(line: str) -> None:
    """Write one line of output on stdout, flushed for readers of a pipe."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    """Write one warning or error line on stderr."""
    sys.stderr.write(f"meshctl: {message}\n")
    sys.stderr.flush()


def decode_key_value(config: MeshConfig, kv: KeyValue) -> Endpoint:
    """Decode one key under the services prefix.

    Raises RecordError when the key or the value is not a registration.
    """
    relative = kv.key.removeprefix(config.services_prefix())
    service, separator, instance = relative.partition("/")
    if not separator or not service or not instance or "/" in instance:
        msg = f"key {kv.key!r} is not <namespace>/services/<service>/<instance id>"
        raise RecordError(msg)
    return decode_record(
        service, kv.key, kv.value, lease=kv.lease, mod_revision=kv.mod_revision
    )


async def list_endpoints(
    client: EtcdClient, config: MeshConfig, prefix: str, *, quiet: bool = False
) -> tuple[dict[str, Endpoint], int]:
    """List the instances under prefix by key, and the store revision.

    Values that do not decode are skipped, with a warning on stderr unless
    quiet is set (for callers that poll).
    """
    kvs, revision = await client.get_prefix(prefix)
    endpoints: dict[str, Endpoint] = {}
    for kv in kvs:
        try:
            endpoints[kv.key] = decode_key_value(config, kv)
        except RecordError as exc:
            if not quiet:
                warn(f"skipping {kv.key}: {exc}")
    return endpoints, revision


def sort_endpoints(endpoints: dict[str, Endpoint]) -> list[Endpoint]:
    return sorted(endpoints.values(), key=lambda e: (e.service, e.instance_id))


def format_age(seconds: float | None) -> str:
    """Format a duration as 42s, 3m05s, 2h03m or 4d02h; None gives '-'."""
    if seconds is None:
        return "-"
    total = max(0, int(seconds))
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def age_of(endpoint: Endpoint, now: float) -> float | None:
    """Return seconds since the instance started, or None when unknown."""
    start = endpoint.info.start_time
    return now - start if start > 0 else None


async def run_until_signal(command: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run command with an event that SIGINT, SIGTERM and SIGHUP set.

    While the command runs, these signals only set the event, so the command
    decides how to stop.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP too: closing the terminal must stop `meshctl up` cleanly, or its
    # children, each in its own session, would keep running.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        return await command(stop)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def until_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await work and return its result.

    If stop is set first, cancel work and return None.
    """
    work_task = asyncio.ensure_future(work)
    stop_task = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_task.cancel()
        if not work_task.done():
            work_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work_task
    if work_task.cancelled():
        return None
    return work_task.result()
