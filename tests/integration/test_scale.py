"""meshctl scale against a real `meshctl up`, real replicas and a real etcd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import grpc
import pytest

from protos import counter_pb2, counter_pb2_grpc
from registry.cli_common import COUNTER_SERVICE, USER_SERVICE
from registry.discovery import Resolver
from registry.etcd_process import free_port
from registry.mesh import Mesh
from registry.model import INSTANCE_METADATA_KEY
from registry.replicas import replicas_prefix, supervisor_key
from tests.integration.test_meshctl import (
    MeshctlProcess,
    assert_one_line_error,
    meshctl,
    meshctl_env,
)

pytestmark = pytest.mark.integration

WORKERS = 8


@dataclass
class Load:
    """What the load workers saw: acknowledged calls, failures, who served."""

    acknowledged: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    served: Counter[str] = field(default_factory=Counter)
    first_reply: dict[str, float] = field(default_factory=dict)
    # Replies from replicas that discovery had already reported as removed:
    # calls that the drain delay kept from failing.
    after_removal: int = 0


@dataclass
class Arrivals:
    """When discovery in the test process reported each instance."""

    added: dict[str, float] = field(default_factory=dict)
    removed: dict[str, float] = field(default_factory=dict)


async def increment_until(
    stub: counter_pb2_grpc.CounterServiceAsyncStub,
    name: str,
    load: Load,
    arrivals: Arrivals,
    stop: asyncio.Event,
) -> None:
    # NOTE: each worker has a counter of its own. Workers that share one
    # counter get ABORTED after counter_svc's 64 compare-and-swap attempts
    # under steady contention, with or without scaling.
    while not stop.is_set():
        request = counter_pb2.IncrementRequest(
            name=name, delta=1, request_id=uuid.uuid4().hex
        )
        call = stub.Increment(request, timeout=5)
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            load.failures.append(f"{exc.code().name}: {exc.details()}")
            continue
        load.acknowledged[name] += 1
        instance = str(dict(await call.trailing_metadata())[INSTANCE_METADATA_KEY])
        load.served[instance] += 1
        load.first_reply.setdefault(instance, time.monotonic())
        if instance in arrivals.removed:
            load.after_removal += 1


async def record_arrivals(resolver: Resolver, arrivals: Arrivals) -> None:
    async for event in resolver.subscribe():
        instance = event.endpoint.instance_id
        if event.kind == "added":
            arrivals.added.setdefault(instance, time.monotonic())
        elif event.kind == "removed":
            arrivals.removed.setdefault(instance, time.monotonic())


def pid_of(instance_id: str) -> int:
    # Instance ids are <host>-<pid>-<random hex> (registry.serve.new_instance_id).
    return int(instance_id.rsplit("-", 2)[-2])


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_exited(pids: set[int], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while any(process_exists(pid) for pid in pids):
            await asyncio.sleep(0.1)


async def start_up(env, tmp_path, *, counters: int, users: int) -> MeshctlProcess:
    up = await MeshctlProcess.start(
        "up",
        "--counter",
        str(counters),
        "--user",
        str(users),
        "--front-port",
        str(free_port()),
        "--ingress-port",
        str(free_port()),
        env=env,
        cwd=tmp_path,
    )
    try:
        await up.read_until("mesh is up:")
    except BaseException:
        up.kill()
        raise
    return up


async def test_scale_under_load_fails_no_call(etcd, mesh_config, tmp_path):
    env = meshctl_env(mesh_config)
    up = await start_up(env, tmp_path, counters=2, users=0)
    load, arrivals = Load(), Arrivals()
    try:
        async with Mesh(mesh_config) as mesh:
            resolver = mesh.resolver(COUNTER_SERVICE)
            await resolver.wait_for(lambda s: len(s) == 2, timeout=10)
            initial = set(resolver.snapshot())
            recorder = asyncio.create_task(record_arrivals(resolver, arrivals))
            stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(COUNTER_SERVICE))
            stop = asyncio.Event()
            names = [f"scale-load-{n}" for n in range(WORKERS)]
            workers = [
                asyncio.create_task(increment_until(stub, name, load, arrivals, stop))
                for name in names
            ]
            await asyncio.sleep(1.0)

            scaled_up = await meshctl("scale", "counter_svc=5", env=env)
            await resolver.wait_for(lambda s: len(s) == 5, timeout=30)
            five = set(resolver.snapshot())
            # Load on five replicas, so each new one has a window to serve in.
            await asyncio.sleep(2.0)

            scaled_down = await meshctl("scale", "counter=1", env=env)
            await resolver.wait_for(lambda s: len(s) == 1, timeout=30)
            survivor = set(resolver.snapshot())
            # Load goes on while the removed replicas drain and exit.
            await wait_exited({pid_of(i) for i in five - survivor})
            await asyncio.sleep(0.5)

            stop.set()
            await asyncio.gather(*workers)
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder
            stored = {}
            for name in names:
                reply = await stub.GetCounter(
                    counter_pb2.GetCounterRequest(name=name), timeout=5
                )
                stored[name] = reply.counter.value
    finally:
        result = await up.stop(signal.SIGTERM)
    supervisor = await etcd.get(supervisor_key(mesh_config))
    output = up.lines + result.stdout.splitlines()

    new = five - initial
    latencies = {
        instance: load.first_reply[instance] - arrivals.added[instance]
        for instance in new
        if instance in load.first_reply and instance in arrivals.added
    }
    print(
        f"\nscale 2->5->1: {load.acknowledged.total()} calls acknowledged, "
        f"{len(load.failures)} failed, {load.after_removal} answered after the "
        f"replica's removal event; served by instance: {dict(load.served)}; "
        "seconds from discovery 'added' to first reply per new instance: "
        + ", ".join(f"{i}={s:.3f}" for i, s in sorted(latencies.items()))
    )
    assert scaled_up.returncode == 0, scaled_up.stderr
    assert "counter_svc: 5 replicas (was 2)" in scaled_up.stdout
    assert "applies the new counts" in scaled_up.stdout
    assert scaled_down.returncode == 0, scaled_down.stderr
    assert "counter_svc: 1 replica (was 5)" in scaled_down.stdout
    assert len(new) == 3
    assert survivor <= initial
    assert load.failures == []
    assert stored == dict(load.acknowledged)
    # Every new replica took traffic between its registration and its removal.
    assert set(load.served) >= new
    assert len(latencies) == 3
    assert any("started counter-3, counter-4, counter-5" in line for line in output)
    assert any(
        "stopping counter-5, counter-4, counter-3, counter-2" in line for line in output
    )
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    assert "still registered" not in result.stderr
    assert supervisor is None


async def test_scale_starts_and_drains_user_svc(etcd, mesh_config, tmp_path):
    env = meshctl_env(mesh_config)
    up = await start_up(env, tmp_path, counters=0, users=0)
    try:
        async with Mesh(mesh_config) as mesh:
            resolver = mesh.resolver(USER_SERVICE)
            await resolver.wait_ready(timeout=10)

            second = await meshctl(
                "up",
                "--front-port",
                str(free_port()),
                "--ingress-port",
                str(free_port()),
                env=env,
                cwd=tmp_path,
            )
            started = await meshctl("scale", "user_svc=2", env=env)
            await resolver.wait_for(lambda s: len(s) == 2, timeout=30)
            users = set(resolver.snapshot())
            stopped = await meshctl("scale", "user=0", env=env)
            await resolver.wait_for(lambda s: not s, timeout=30)
            await wait_exited({pid_of(i) for i in users})
        stored = await etcd.get(replicas_prefix(mesh_config) + "user_svc")
    finally:
        result = await up.stop(signal.SIGTERM)

    assert_one_line_error(second, "already supervises namespace '/test-mesh'")
    assert started.returncode == 0
    assert "user_svc: 2 replicas (was 0)" in started.stdout
    assert f"(pid {up.process.pid} on " in started.stdout
    assert stopped.returncode == 0
    assert stored is not None
    assert stored.value == b"0"
    assert result.returncode == 0
    assert "Traceback" not in result.stderr


async def test_scale_without_up_stores_count(etcd, mesh_config):
    env = meshctl_env(mesh_config)

    result = await meshctl("scale", "counter_svc=3", "user_svc=0", env=env)
    stored = await etcd.get(replicas_prefix(mesh_config) + "counter_svc")

    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "counter_svc: 3 replicas (was not set)",
        "user_svc: 0 replicas (was not set)",
    ]
    assert "no meshctl up is running in namespace '/test-mesh'" in result.stderr
    assert stored is not None
    assert stored.value == b"3"


@pytest.mark.parametrize(
    ("argument", "fragment"),
    [
        ("counter_svc=-1", "invalid replica count '-1' in 'counter_svc=-1'"),
        ("foo=2", "unknown service 'foo' in 'foo=2'"),
    ],
)
async def test_scale_bad_argument_is_one_line_exit_2(
    etcd, mesh_config, argument, fragment
):
    env = meshctl_env(mesh_config)

    result = await meshctl("scale", argument, env=env)
    kvs, _ = await etcd.get_prefix(replicas_prefix(mesh_config))

    assert_one_line_error(result, fragment)
    assert kvs == []
