"""Run a set of child processes, restart those that die, and stop them all.

`meshctl up` uses this to run the service replicas and the front. Each child
runs in its own session, so that Ctrl-C in the terminal reaches only the
supervisor, which then stops the children in a known order. Each child's
stdout and stderr go, merged, to its own log file.

A child that exits while the supervisor is not stopping is restarted after a
backoff of `initial_backoff * 2**n` seconds, capped at `max_backoff`. After
`max_restarts` restarts in a row the child is left stopped and reported as
failed. A run that lasts `stable_after` seconds resets the count.

While the set runs, `add` starts one more child and `retire` stops one for
good: SIGTERM first, SIGKILL after the grace period, and no restart. A
retired child leaves `children` once it has exited. `meshctl scale` changes
the replica counts of `meshctl up` this way.

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
    # The replica set that the child belongs to, such as "counter_svc". It is
    # empty for a child that is not a replica.
    group: str = ""


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
    # Set by Supervisor.retire: the child is stopping for good.
    retire_requested: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def retiring(self) -> bool:
        return self.retire_requested.is_set()


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
        self._kill_timers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start every child, or raise SupervisorError if one cannot be spawned."""
        for child in self.children:
            await self._launch(child)

    async def add(self, spec: ChildSpec) -> None:
        """Start one more child while the set runs.

        Raises SupervisorError when the name is taken, when the set is
        stopping, or when the process cannot be spawned.
        """
        if self.stopping:
            raise SupervisorError(f"cannot start {spec.name}: the set is stopping")
        if any(child.spec.name == spec.name for child in self.children):
            raise SupervisorError(f"cannot start {spec.name}: the name is taken")
        child = Child(spec)
        self.children.append(child)
        try:
            await self._launch(child)
        except SupervisorError:
            self.children.remove(child)
            raise

    def retire(self, name: str) -> None:
        """Stop one child for good: SIGTERM now, SIGKILL after the grace period.

        The child is not restarted, and it leaves `children` once it has
        exited. Raises SupervisorError for an unknown name.
        """
        child = next((c for c in self.children if c.spec.name == name), None)
        if child is None:
            raise SupervisorError(f"cannot stop {name}: no such child")
        if child.retiring:
            return
        child.retire_requested.set()
        if child.state is ChildState.FAILED:
            # Its supervising task has ended, so nothing else removes it.
            child.state = ChildState.STOPPED
            self.children.remove(child)
            return
        child.state = ChildState.STOPPING
        if child.running:
            self._terminate(child)

    def _terminate(self, child: Child) -> None:
        _signal_group(child, signal.SIGTERM)
        timer = asyncio.create_task(self._kill_after_grace(child))
        self._kill_timers.add(timer)
        timer.add_done_callback(self._kill_timers.discard)

    async def _launch(self, child: Child) -> None:
        child.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        child.spec.log_path.write_bytes(b"")
        await self._spawn(child)
        # A task per child right away, so that stop() can reach the
        # children already running when a later spawn fails.
        task = asyncio.create_task(self._supervise(child), name=child.spec.name)
        self._tasks.append(task)

    async def _kill_after_grace(self, child: Child) -> None:
        process = child.process
        await asyncio.sleep(self.grace)
        if child.process is process and child.running:
            self._report(
                f"{child.spec.name} (pid {child.pid}) did not stop within "
                f"{self.grace:.0f} s; sending SIGKILL"
            )
            child.killed = True
            _signal_group(child, signal.SIGKILL)

    async def stop(self) -> None:
        """Send SIGTERM to every child, then SIGKILL those still running
        after the grace period, and wait until every child has exited."""
        self._stopping.set()
        for timer in self._kill_timers:
            timer.cancel()
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
        logger.info("started %s as pid %d", spec.name, process.pid)
        if child.retiring:
            # retire() ran while the process was being spawned.
            child.state = ChildState.STOPPING
            self._terminate(child)
            return
        child.state = ChildState.RUNNING

    async def _supervise(self, child: Child) -> None:
        while True:
            exit_info = await self._wait_exit(child)
            await self._notify_exit(exit_info)
            if child.retiring:
                child.state = ChildState.STOPPED
                if not self.stopping:
                    self.children.remove(child)
                return
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
            requested=self.stopping or child.retiring,
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
        await self._sleep_unless_ended(child, delay)
        if self.stopping or child.retiring:
            child.state = ChildState.STOPPED
            if child.retiring and not self.stopping:
                self.children.remove(child)
            return False
        return True

    async def _sleep_unless_ended(self, child: Child, delay: float) -> None:
        """Sleep for delay seconds, or less if the set stops or the child retires."""
        waits = {
            asyncio.ensure_future(self._stopping.wait()),
            asyncio.ensure_future(child.retire_requested.wait()),
        }
        try:
            await asyncio.wait(
                waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()


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
            *lines, pending = (pending + chunk).split(b"\n")
            # Keep at most one chunk of a partial line, so that an endless
            # line cannot grow the buffer.
            pending = pending[-_CHUNK_SIZE:]
            # Noted before the log is written, so a reader who finds the
            # serving line in the log also finds the instance id noted.
            for line in lines:
                _note_serving_line(child, line)
            log.write(chunk)
            log.flush()


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
