"""Run a set of child processes, restart those that die, and stop them all.

`meshctl up` uses this to run the service replicas and the front. Each child
runs in its own session, so that Ctrl-C in the terminal reaches only the
supervisor, which then stops the children in a known order. Each child's
stdout and stderr go, merged, to its own log file.

A child that exits while the supervisor is not stopping is restarted after a
backoff of `initial_backoff * 2**n` seconds, capped at `max_backoff`. After
`max_restarts` restarts in a row the child is left stopped and reported as
failed. A run that lasts `stable_after` seconds resets the count.

NOTE: children are not tied to the supervisor's life. If the supervisor is
killed with SIGKILL, they keep running until they are stopped by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from registry.errors import MeshError

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

# The line that `registry.serve.run_service` prints once a server is
# registered: "serving <services> at <address> as <instance id>".
_SERVING_LINE = re.compile(
    r"\bserving (?P<services>.+) at (?P<address>\S+) as (?P<id>\S+)\s*$"
)

# Bytes read from a child's output at a time.
_CHUNK_SIZE = 65536


class SupervisorError(MeshError):
    """A child process could not be started or the set could not be run."""


class ChildState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "restarting"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child: a name for logs and reports, a command and its env."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    log_path: Path


@dataclass(frozen=True)
class RestartPolicy:
    """Bounds on restarting a child that exits on its own. Times in seconds."""

    max_restarts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 10.0
    stable_after: float = 30.0

    def delay(self, restarts: int) -> float:
        """Return the wait before restart number `restarts + 1`."""
        return float(min(self.max_backoff, self.initial_backoff * 2**restarts))


@dataclass(frozen=True)
class ChildExit:
    """One exit of a child process, as reported to the supervisor's owner."""

    name: str
    pid: int
    returncode: int
    # Instance ids the child announced with its "serving ... as <id>" line.
    instance_ids: frozenset[str]
    # True when the supervisor asked for the exit (stop), False for a crash.
    requested: bool
    killed: bool


@dataclass
class Child:
    """The live state of one supervised child."""

    spec: ChildSpec
    state: ChildState = ChildState.STARTING
    pid: int = 0
    restarts: int = 0
    started_at: float = 0.0
    instance_ids: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    process: asyncio.subprocess.Process | None = None
    killed: bool = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


Reporter = Callable[[str], None]
ExitHandler = Callable[[ChildExit], Awaitable[None]]


async def _ignore_exit(_exit: ChildExit) -> None:
    return None


class Supervisor:
    """Start children, restart them when they crash, and stop them together."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        policy: RestartPolicy | None = None,
        grace: float = 10.0,
        report: Reporter = print,
        on_exit: ExitHandler = _ignore_exit,
    ) -> None:
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise SupervisorError(f"child names must be unique, got {names!r}")
        self.children = [Child(spec) for spec in specs]
        self.policy = policy or RestartPolicy()
        self.grace = grace
        self._report = report
        self._on_exit = on_exit
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every child, or raise SupervisorError if one cannot be spawned."""
        for child in self.children:
            child.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            child.spec.log_path.write_bytes(b"")
            await self._spawn(child)
            # A task per child right away, so that stop() can reach the
            # children already running when a later spawn fails.
            task = asyncio.create_task(self._supervise(child), name=child.spec.name)
            self._tasks.append(task)

    async def stop(self) -> None:
        """Send SIGTERM to every child, then SIGKILL those still running
        after the grace period, and wait until every child has exited."""
        self._stopping.set()
        for child in self.children:
            if child.running:
                child.state = ChildState.STOPPING
                _signal_group(child, signal.SIGTERM)
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=self.grace)
        for child in self.children:
            if child.running:
                self._report(
                    f"{child.spec.name} (pid {child.pid}) did not stop within "
                    f"{self.grace:.0f} s; sending SIGKILL"
                )
                child.killed = True
                _signal_group(child, signal.SIGKILL)
        if pending:
            await asyncio.wait(pending)
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                logger.error(
                    "supervising task %s failed",
                    task.get_name(),
                    exc_info=task.exception(),
                )

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def _spawn(self, child: Child) -> None:
        spec = child.spec
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                env=dict(spec.env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            msg = f"cannot start {spec.name} ({' '.join(spec.argv)}): {exc}"
            raise SupervisorError(msg) from exc
        child.process = process
        child.pid = process.pid
        child.started_at = time.monotonic()
        child.killed = False
        child.instance_ids = set()
        child.addresses = set()
        child.state = ChildState.RUNNING
        logger.info("started %s as pid %d", spec.name, process.pid)

    async def _supervise(self, child: Child) -> None:
        while True:
            exit_info = await self._wait_exit(child)
            await self._notify_exit(exit_info)
            if self.stopping:
                child.state = ChildState.STOPPED
                return
            if not await self._wait_backoff(child, exit_info):
                return
            try:
                await self._spawn(child)
            except SupervisorError as exc:
                child.state = ChildState.FAILED
                self._report(f"{exc}; giving up on {child.spec.name}")
                return
            self._report(f"{child.spec.name} restarted as pid {child.pid}")

    async def _wait_exit(self, child: Child) -> ChildExit:
        process = child.process
        assert process is not None
        await _copy_output(child, process)
        returncode = await process.wait()
        return ChildExit(
            name=child.spec.name,
            pid=process.pid,
            returncode=returncode,
            instance_ids=frozenset(child.instance_ids),
            requested=self.stopping,
            killed=child.killed,
        )

    async def _notify_exit(self, exit_info: ChildExit) -> None:
        if exit_info.requested:
            logger.info("%s %s", exit_info.name, describe_exit(exit_info.returncode))
        try:
            await self._on_exit(exit_info)
        except Exception:
            logger.exception("exit handler failed for %s", exit_info.name)

    async def _wait_backoff(self, child: Child, exit_info: ChildExit) -> bool:
        """Wait before a restart, and return False when there is none."""
        spec = child.spec
        if time.monotonic() - child.started_at >= self.policy.stable_after:
            child.restarts = 0
        status = describe_exit(exit_info.returncode)
        if child.restarts >= self.policy.max_restarts:
            child.state = ChildState.FAILED
            self._report(
                f"{spec.name} (pid {exit_info.pid}) {status} after "
                f"{child.restarts} restarts; giving up, see {spec.log_path}"
            )
            return False
        delay = self.policy.delay(child.restarts)
        child.restarts += 1
        child.state = ChildState.BACKOFF
        self._report(
            f"{spec.name} (pid {exit_info.pid}) {status}; restarting in "
            f"{delay:.1f} s (restart {child.restarts} of "
            f"{self.policy.max_restarts}), see {spec.log_path}"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        if self.stopping:
            child.state = ChildState.STOPPED
            return False
        return True


async def _copy_output(child: Child, process: asyncio.subprocess.Process) -> None:
    """Append the child's output to its log until EOF, noting serving lines.

    Output is copied in chunks, so a line of any length reaches the log.
    """
    assert process.stdout is not None
    pending = b""
    with child.spec.log_path.open("ab") as log:
        log.write(f"--- pid {process.pid} started\n".encode())
        log.flush()
        while chunk := await process.stdout.read(_CHUNK_SIZE):
            log.write(chunk)
            log.flush()
            *lines, pending = (pending + chunk).split(b"\n")
            # Keep at most one chunk of a partial line, so that an endless
            # line cannot grow the buffer.
            pending = pending[-_CHUNK_SIZE:]
            for line in lines:
                _note_serving_line(child, line)


def _note_serving_line(child: Child, line: bytes) -> None:
    match = _SERVING_LINE.search(line.decode("utf-8", errors="replace"))
    if match:
        child.instance_ids.add(match["id"])
        child.addresses.add(match["address"])


def _signal_group(child: Child, signum: signal.Signals) -> None:
    # Each child leads its own process group (start_new_session), so the
    # signal also reaches any process the child started itself.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)


def describe_exit(returncode: int) -> str:
    """Describe a return code the way a shell user reads it."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"
