"""Supervisor: start, restart with a bound, and stop real child processes."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from registry.supervisor import (
    ChildExit,
    ChildSpec,
    ChildState,
    RestartPolicy,
    Supervisor,
    SupervisorError,
    describe_exit,
)

SLEEPER = "import time; print('up', flush=True); time.sleep(60)"
SERVING = (
    "import time; print('svc: serving a.B, c.D at 127.0.0.1:5001 as inst-7',"
    " flush=True); time.sleep(60)"
)
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ready', flush=True); time.sleep(60)"
)
CRASHER = "import sys; print('boom', flush=True); sys.exit(3)"

FAST = RestartPolicy(max_restarts=2, initial_backoff=0.01, max_backoff=0.05)


def child(tmp_path: Path, name: str, code: str) -> ChildSpec:
    return ChildSpec(
        name=name,
        argv=(sys.executable, "-c", code),
        env=dict(os.environ),
        log_path=tmp_path / "logs" / f"{name}.log",
    )


async def wait_for_log(spec: ChildSpec, text: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not (spec.log_path.exists() and text in spec.log_path.read_text()):
            await asyncio.sleep(0.02)


async def wait_for_state(supervisor: Supervisor, state: ChildState) -> None:
    async with asyncio.timeout(10):
        while any(c.state is not state for c in supervisor.children):
            await asyncio.sleep(0.02)


class Recorder:
    def __init__(self) -> None:
        self.exits: list[ChildExit] = []
        self.messages: list[str] = []

    async def on_exit(self, exit_info: ChildExit) -> None:
        self.exits.append(exit_info)

    def report(self, message: str) -> None:
        self.messages.append(message)


async def test_stop_terminates_every_child(tmp_path):
    specs = [child(tmp_path, "a", SLEEPER), child(tmp_path, "b", SLEEPER)]
    recorder = Recorder()
    supervisor = Supervisor(specs, on_exit=recorder.on_exit, report=recorder.report)
    await supervisor.start()
    for spec in specs:
        await wait_for_log(spec, "up")

    await supervisor.stop()

    assert [c.state for c in supervisor.children] == [ChildState.STOPPED] * 2
    assert not any(c.running for c in supervisor.children)
    assert sorted(e.name for e in recorder.exits) == ["a", "b"]
    assert all(e.requested for e in recorder.exits)
    assert all(e.returncode == -15 for e in recorder.exits)
    assert not any(e.killed for e in recorder.exits)


async def test_child_output_goes_to_its_log(tmp_path):
    spec = child(tmp_path, "a", SLEEPER)
    supervisor = Supervisor([spec], report=lambda _m: None)
    await supervisor.start()

    await wait_for_log(spec, "up")
    await supervisor.stop()

    text = spec.log_path.read_text()
    assert f"--- pid {supervisor.children[0].pid} started" in text
    assert "up\n" in text


async def test_serving_line_records_instance_id(tmp_path):
    spec = child(tmp_path, "svc", SERVING)
    recorder = Recorder()
    supervisor = Supervisor([spec], on_exit=recorder.on_exit, report=recorder.report)
    await supervisor.start()
    await wait_for_log(spec, "inst-7")

    running = supervisor.children[0]
    instance_ids = set(running.instance_ids)
    addresses = set(running.addresses)
    await supervisor.stop()

    assert instance_ids == {"inst-7"}
    assert addresses == {"127.0.0.1:5001"}
    assert recorder.exits[0].instance_ids == frozenset({"inst-7"})


async def test_long_output_line_reaches_log(tmp_path):
    code = (
        "import time; print('x' * 200000, flush=True);"
        " print('svc: serving a.B at 127.0.0.1:5002 as inst-8', flush=True);"
        " time.sleep(60)"
    )
    spec = child(tmp_path, "chatty", code)
    supervisor = Supervisor([spec], report=lambda _m: None)
    await supervisor.start()
    await wait_for_log(spec, "inst-8")

    instance_ids = set(supervisor.children[0].instance_ids)
    await supervisor.stop()

    assert "x" * 200000 + "\n" in spec.log_path.read_text()
    assert instance_ids == {"inst-8"}


async def test_child_ignoring_sigterm_is_killed(tmp_path):
    spec = child(tmp_path, "stubborn", STUBBORN)
    recorder = Recorder()
    supervisor = Supervisor(
        [spec], grace=0.5, on_exit=recorder.on_exit, report=recorder.report
    )
    await supervisor.start()
    await wait_for_log(spec, "ready")

    await supervisor.stop()

    assert recorder.exits[0].returncode == -9
    assert recorder.exits[0].killed
    assert any("sending SIGKILL" in m for m in recorder.messages)


async def test_crashing_child_is_restarted_then_given_up(tmp_path):
    spec = child(tmp_path, "crasher", CRASHER)
    recorder = Recorder()
    supervisor = Supervisor(
        [spec], policy=FAST, on_exit=recorder.on_exit, report=recorder.report
    )
    await supervisor.start()

    await wait_for_state(supervisor, ChildState.FAILED)
    await supervisor.stop()

    # One first run plus max_restarts restarts.
    assert len(recorder.exits) == 3
    assert all(e.returncode == 3 for e in recorder.exits)
    assert not any(e.requested for e in recorder.exits)
    assert supervisor.children[0].restarts == 2
    assert spec.log_path.read_text().count("boom") == 3
    assert any("restart 1 of 2" in m for m in recorder.messages)
    assert any("giving up" in m for m in recorder.messages)


async def test_stop_during_backoff_skips_restart(tmp_path):
    spec = child(tmp_path, "crasher", CRASHER)
    slow = RestartPolicy(max_restarts=5, initial_backoff=30.0, max_backoff=30.0)
    recorder = Recorder()
    supervisor = Supervisor(
        [spec], policy=slow, on_exit=recorder.on_exit, report=recorder.report
    )
    await supervisor.start()
    await wait_for_state(supervisor, ChildState.BACKOFF)

    async with asyncio.timeout(5):
        await supervisor.stop()

    assert supervisor.children[0].state is ChildState.STOPPED
    assert len(recorder.exits) == 1


async def test_unstartable_child_raises(tmp_path):
    spec = ChildSpec(
        "missing", (str(tmp_path / "no-such-program"),), {}, tmp_path / "m.log"
    )
    supervisor = Supervisor([spec], report=lambda _m: None)

    with pytest.raises(SupervisorError, match="cannot start missing"):
        await supervisor.start()
    await supervisor.stop()


async def test_spawn_failure_still_stops_started_children(tmp_path):
    first = child(tmp_path, "first", SLEEPER)
    missing = ChildSpec("missing", (str(tmp_path / "nope"),), {}, tmp_path / "m.log")
    supervisor = Supervisor([first, missing], report=lambda _m: None)

    with pytest.raises(SupervisorError):
        await supervisor.start()
    await supervisor.stop()

    assert not supervisor.children[0].running


def test_duplicate_child_names_are_rejected(tmp_path):
    spec = child(tmp_path, "a", SLEEPER)

    with pytest.raises(SupervisorError, match="unique"):
        Supervisor([spec, spec])


@pytest.mark.parametrize(
    ("restarts", "expected"), [(0, 0.5), (1, 1.0), (3, 4.0), (5, 10.0), (9, 10.0)]
)
def test_restart_delay_doubles_up_to_cap(restarts, expected):
    assert RestartPolicy().delay(restarts) == expected


@pytest.mark.parametrize(
    ("returncode", "text"),
    [
        (0, "exited with status 0"),
        (2, "exited with status 2"),
        (-9, "was killed by SIGKILL"),
    ],
)
def test_describe_exit(returncode, text):
    assert describe_exit(returncode) == text
