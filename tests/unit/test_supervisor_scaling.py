"""Supervisor.add and Supervisor.retire with real child processes."""

from __future__ import annotations

import asyncio

import pytest

from registry.supervisor import ChildState, RestartPolicy, Supervisor, SupervisorError
from tests.unit.test_cli_supervisor import (
    CRASHER,
    SLEEPER,
    STUBBORN,
    Recorder,
    child,
    wait_for_log,
    wait_for_state,
)


async def wait_until_gone(supervisor: Supervisor, name: str) -> None:
    async with asyncio.timeout(10):
        while any(c.spec.name == name for c in supervisor.children):
            await asyncio.sleep(0.02)


async def test_add_starts_child_in_running_set(tmp_path):
    first, extra = child(tmp_path, "a", SLEEPER), child(tmp_path, "b", SLEEPER)
    supervisor = Supervisor([first], report=lambda _m: None)
    await supervisor.start()

    await supervisor.add(extra)
    await wait_for_log(extra, "up")
    running = [c.spec.name for c in supervisor.children if c.running]
    await supervisor.stop()

    assert running == ["a", "b"]
    assert not any(c.running for c in supervisor.children)


async def test_add_rejects_taken_name(tmp_path):
    supervisor = Supervisor([child(tmp_path, "a", SLEEPER)], report=lambda _m: None)
    await supervisor.start()

    with pytest.raises(SupervisorError, match="cannot start a: the name is taken"):
        await supervisor.add(child(tmp_path, "a", SLEEPER))
    await supervisor.stop()

    assert len(supervisor.children) == 1


async def test_add_after_stop_raises(tmp_path):
    supervisor = Supervisor([], report=lambda _m: None)
    await supervisor.stop()

    with pytest.raises(SupervisorError, match="the set is stopping"):
        await supervisor.add(child(tmp_path, "a", SLEEPER))


async def test_retire_stops_child_without_restart(tmp_path):
    keep, leave = child(tmp_path, "a", SLEEPER), child(tmp_path, "b", SLEEPER)
    recorder = Recorder()
    supervisor = Supervisor(
        [keep, leave], on_exit=recorder.on_exit, report=recorder.report
    )
    await supervisor.start()
    await wait_for_log(leave, "up")

    supervisor.retire("b")
    await wait_until_gone(supervisor, "b")
    names = [c.spec.name for c in supervisor.children]
    await supervisor.stop()

    assert names == ["a"]
    exits = {e.name: e for e in recorder.exits}
    assert exits["b"].requested
    assert exits["b"].returncode == -15
    assert not exits["b"].killed
    assert not any("restarting" in m for m in recorder.messages)


async def test_retire_kills_child_ignoring_sigterm(tmp_path):
    spec = child(tmp_path, "stubborn", STUBBORN)
    recorder = Recorder()
    supervisor = Supervisor(
        [spec], grace=0.3, on_exit=recorder.on_exit, report=recorder.report
    )
    await supervisor.start()
    await wait_for_log(spec, "ready")

    supervisor.retire("stubborn")
    await wait_until_gone(supervisor, "stubborn")
    await supervisor.stop()

    assert recorder.exits[0].returncode == -9
    assert recorder.exits[0].killed
    assert any("sending SIGKILL" in m for m in recorder.messages)


async def test_retire_during_backoff_ends_wait(tmp_path):
    slow = RestartPolicy(max_restarts=5, initial_backoff=30.0, max_backoff=30.0)
    supervisor = Supervisor(
        [child(tmp_path, "crasher", CRASHER)], policy=slow, report=lambda _m: None
    )
    await supervisor.start()
    await wait_for_state(supervisor, ChildState.BACKOFF)

    supervisor.retire("crasher")
    async with asyncio.timeout(5):
        await wait_until_gone(supervisor, "crasher")
    await supervisor.stop()

    assert supervisor.children == []


async def test_retire_failed_child_removes_it(tmp_path):
    fast = RestartPolicy(max_restarts=0)
    supervisor = Supervisor(
        [child(tmp_path, "crasher", CRASHER)], policy=fast, report=lambda _m: None
    )
    await supervisor.start()
    await wait_for_state(supervisor, ChildState.FAILED)

    supervisor.retire("crasher")
    await supervisor.stop()

    assert supervisor.children == []


async def test_retire_unknown_name_raises():
    supervisor = Supervisor([], report=lambda _m: None)

    with pytest.raises(SupervisorError, match="cannot stop nope: no such child"):
        supervisor.retire("nope")
