"""Long-running processes outlive their etcd auth token with no failed call.

etcd runs with `--auth-token-ttl 3`: a simple token that is not used for 3 s
expires. The load runs in bursts with idle gaps longer than that, so every
process meets an expired token many times. The run lasts 20 s by default;
MESH_SECURITY_SOAK_SECONDS=120 gives the two-minute run.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from protos import counter_pb2_grpc, user_pb2, user_pb2_grpc
from registry.certs import (
    ADMIN_IDENTITY,
    COUNTER_IDENTITY,
    FRONT_IDENTITY,
    USER_IDENTITY,
)
from registry.errors import EtcdUnavailableError
from registry.etcd import EtcdClient
from registry.mesh import Mesh
from tests.faults.load import LoadReport, SteadyLoad
from tests.integration.service_process import ServiceProcesses
from tests.security.secure_mesh import SecureMesh

pytestmark = pytest.mark.integration

COUNTER = "mesh.counter.v1.CounterService"
USER = "mesh.user.v1.UserService"
RUN_SECONDS = float(os.environ.get("MESH_SECURITY_SOAK_SECONDS", "20"))
TOKEN_TTL = 3
BURST_SECONDS = 2.0
# Longer than the token TTL, so that every idle token expires.
IDLE_SECONDS = TOKEN_TTL + 1.5


async def _bursts(mesh: Mesh, until: float) -> tuple[LoadReport, int]:
    """Run load bursts with idle gaps; return the summed report and user calls."""
    counter = counter_pb2_grpc.CounterServiceStub(mesh.channel(COUNTER))
    users = user_pb2_grpc.UserServiceStub(mesh.channel(USER))
    await users.CreateUser(
        user_pb2.CreateUserRequest(username="soak", password="soak-password-1")
    )
    total = LoadReport()
    user_calls = 0
    loop = asyncio.get_running_loop()
    burst = 0
    while loop.time() < until:
        load = SteadyLoad(counter, f"soak{burst}", workers=4)
        load.start()
        await asyncio.sleep(BURST_SECONDS)
        report = await load.stop()
        total.acked += report.acked
        total.failed += report.failed
        total.errors.update(report.errors)
        await asyncio.sleep(IDLE_SECONDS)
        await users.GetUser(user_pb2.GetUserRequest(username="soak"))
        user_calls += 1
        burst += 1
    return total, user_calls


# The run itself lasts RUN_SECONDS; the rest is set-up and teardown.
@pytest.mark.timeout(RUN_SECONDS + 120)
async def test_token_expiry_under_load(tmp_path: Path):
    secure = SecureMesh(tmp_path, token_ttl=TOKEN_TTL)
    await secure.start()
    processes = ServiceProcesses(secure.config(COUNTER_IDENTITY), tmp_path)
    try:
        async with EtcdClient(secure.config(ADMIN_IDENTITY)) as admin:
            for _ in range(2):
                await processes.start(
                    admin, "counter_svc", COUNTER, secure.etcd_env(COUNTER_IDENTITY)
                )
            await processes.start(
                admin, "user_svc", USER, secure.etcd_env(USER_IDENTITY)
            )
            leases_before = {
                kv.key: kv.lease
                for kv in (
                    await admin.get_prefix(secure.config(None).services_prefix())
                )[0]
            }
            async with Mesh(secure.config(FRONT_IDENTITY)) as mesh:
                sizes: list[int] = []
                for service in (COUNTER, USER):
                    resolver = mesh.resolver(service)
                    await resolver.wait_for(bool, timeout=10)
                    resolver.add_listener(lambda snapshot: sizes.append(len(snapshot)))
                until = asyncio.get_running_loop().time() + RUN_SECONDS
                report, user_calls = await _bursts(mesh, until)
            leases_after = {
                kv.key: kv.lease
                for kv in (
                    await admin.get_prefix(secure.config(None).services_prefix())
                )[0]
            }
    finally:
        processes.stop_all()
        secure.stop()
    logs = "".join(process.log_text() for process in processes.started)
    passwords = [path.read_text().strip() for path in secure.auth.glob("*.password")]
    renewals = logs.count("logging in again")

    assert report.failed == 0, report.errors
    assert report.acked > 0
    assert user_calls >= 2
    assert sizes == []
    assert len(leases_before) == 3
    assert leases_after == leases_before
    assert renewals >= 2
    assert len(passwords) == 5
    assert not [password for password in passwords if password in logs]


async def test_expired_token_renewed_for_watch(tmp_path: Path):
    secure = SecureMesh(tmp_path, token_ttl=TOKEN_TTL)
    await secure.start()
    prefix = secure.config(None).services_prefix()
    try:
        async with EtcdClient(secure.config(COUNTER_IDENTITY)) as etcd:
            await asyncio.sleep(IDLE_SECONDS)
            outcomes: list[str] = []
            for _ in range(2):
                watch = etcd.watch_prefix(prefix, start_revision=0)
                try:
                    async for batch in watch:
                        outcomes.append(f"created at {batch.revision}")
                        break
                except EtcdUnavailableError as exc:
                    outcomes.append(str(exc))
                finally:
                    watch.cancel()
            logins = etcd.logins
            read, _ = await etcd.get_prefix(prefix)
    finally:
        secure.stop()

    assert "logged in again" in outcomes[0]
    assert outcomes[1].startswith("created at")
    assert logins == 2
    assert read == []
