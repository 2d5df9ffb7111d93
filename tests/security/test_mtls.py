"""mTLS between services: identities are checked on both sides of each call."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import counter_pb2_grpc, user_pb2, user_pb2_grpc
from registry.cert_authority import (
    create_authority,
    issue_certificate,
    load_authority,
    mesh_identity_profile,
    write_pair,
)
from registry.certs import (
    ADMIN_IDENTITY,
    COUNTER_IDENTITY,
    FRONT_IDENTITY,
    USER_IDENTITY,
    identity_paths,
)
from registry.etcd import EtcdClient
from registry.mesh import Mesh
from tests.faults.load import SteadyLoad
from tests.integration.service_process import ServiceProcess, ServiceProcesses
from tests.security.secure_mesh import SecureMesh

pytestmark = pytest.mark.integration

COUNTER = "mesh.counter.v1.CounterService"
USER = "mesh.user.v1.UserService"


class Running:
    """A secured mesh with two counter_svc and one user_svc process."""

    def __init__(
        self, secure: SecureMesh, processes: ServiceProcesses, admin: EtcdClient
    ):
        self.secure = secure
        self.processes = processes
        self.admin = admin

    @property
    def counters(self) -> list[ServiceProcess]:
        return [p for p in self.processes.started if p.module == "counter_svc"]

    @property
    def user(self) -> ServiceProcess:
        return next(p for p in self.processes.started if p.module == "user_svc")


@pytest.fixture
async def running(secure_mesh: SecureMesh, tmp_path: Path) -> AsyncIterator[Running]:
    processes = ServiceProcesses(secure_mesh.config(COUNTER_IDENTITY), tmp_path)
    async with EtcdClient(secure_mesh.config(ADMIN_IDENTITY)) as admin:
        try:
            for _ in range(2):
                await processes.start(
                    admin,
                    "counter_svc",
                    COUNTER,
                    secure_mesh.service_env(COUNTER_IDENTITY),
                )
            await processes.start(
                admin, "user_svc", USER, secure_mesh.service_env(USER_IDENTITY)
            )
            yield Running(secure_mesh, processes, admin)
        finally:
            processes.stop_all()


def _credentials(
    secure: SecureMesh, identity: str | None, *, ca: bytes | None = None
) -> grpc.ChannelCredentials:
    root = ca or (secure.certs / "ca.crt").read_bytes()
    if identity is None:
        return grpc.ssl_channel_credentials(root)
    paths = identity_paths(secure.certs, identity)
    return grpc.ssl_channel_credentials(
        root, paths.key.read_bytes(), paths.cert.read_bytes()
    )


async def _health(address: str, credentials: grpc.ChannelCredentials | None, name: str):
    options = [("grpc.ssl_target_name_override", name)]
    if credentials is None:
        channel = grpc.aio.insecure_channel(address)
    else:
        channel = grpc.aio.secure_channel(address, credentials, options=options)
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)


def _peer_serial(address: str, secure: SecureMesh) -> int:
    """Handshake as the front and return the serial of the server's certificate."""
    host, _, port = address.rpartition(":")
    paths = identity_paths(secure.certs, FRONT_IDENTITY)
    context = ssl.create_default_context(cafile=str(paths.ca))
    context.check_hostname = False
    context.load_cert_chain(paths.cert, paths.key)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=3) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_front_identity_calls_every_service(running: Running):
    secure = running.secure
    for process, identity in (
        (running.counters[0], COUNTER_IDENTITY),
        (running.user, USER_IDENTITY),
    ):
        reply = await _health(
            process.address,
            _credentials(secure, FRONT_IDENTITY),
            f"{identity}.mesh.local",
        )

        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_clients_without_mesh_certificate_refused(
    running: Running, tmp_path: Path
):
    secure = running.secure
    other_ca = create_authority("another CA", days=2)
    stranger = issue_certificate(
        other_ca, mesh_identity_profile(FRONT_IDENTITY), days=1
    )
    write_pair(tmp_path / "stranger.crt", tmp_path / "stranger.key", stranger)
    other_root = other_ca.cert.public_bytes(serialization.Encoding.PEM)
    strangers = {
        "plaintext": None,
        "no client certificate": _credentials(secure, None),
        "certificate of another CA": grpc.ssl_channel_credentials(
            (secure.certs / "ca.crt").read_bytes(),
            (tmp_path / "stranger.key").read_bytes(),
            (tmp_path / "stranger.crt").read_bytes(),
        ),
        "server of another CA": _credentials(secure, FRONT_IDENTITY, ca=other_root),
    }
    refused: list[str] = []
    processes = [*running.counters, running.user]
    for label, credentials in strangers.items():
        for process in processes:
            name = (
                "user-svc.mesh.local"
                if process.module == "user_svc"
                else "counter-svc.mesh.local"
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _health(process.address, credentials, name)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, label
            refused.append(f"{label} -> {process.address}")

    assert len(refused) == len(strangers) * len(processes)


async def test_policy_denies_service_to_service(running: Running):
    secure = running.secure
    options = [("grpc.ssl_target_name_override", "user-svc.mesh.local")]
    channel = grpc.aio.secure_channel(
        running.user.address, _credentials(secure, COUNTER_IDENTITY), options=options
    )
    async with channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetUser(user_pb2.GetUserRequest(username="alice"), timeout=3)
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=3
        )

    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "counter-svc" in (caught.value.details() or "")
    assert "/mesh.user.v1.UserService/GetUser" in (caught.value.details() or "")
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_wrong_identity_endpoint_gets_no_calls(
    running: Running, caplog: pytest.LogCaptureFixture
):
    secure = running.secure
    config = secure.config(FRONT_IDENTITY, mesh_tls=True)
    user_key = config.service_prefix(USER) + running.user.instance_id
    record = await running.admin.get(user_key)
    assert record is not None
    impostor_key = config.service_prefix(COUNTER) + running.user.instance_id
    await running.admin.put(impostor_key, record.value)
    caplog.set_level(logging.WARNING, logger="registry.identity_guard")
    async with Mesh(config) as mesh:
        channel = mesh.channel(COUNTER)
        await mesh.resolver(COUNTER).wait_for(lambda snap: len(snap) == 3, timeout=10)
        load = SteadyLoad(counter_pb2_grpc.CounterServiceStub(channel), "impostor")
        load.start()
        await load.wait_acks(300)
        report = await load.stop()
        rejected = channel._guard.rejected if channel._guard else frozenset()
    warnings = [r for r in caplog.records if "presented" in r.getMessage()]

    assert report.failed == 0, report.errors
    assert running.user.instance_id not in report.served
    assert set(report.served) == {p.instance_id for p in running.counters}
    assert (running.user.instance_id, running.user.address) in rejected
    assert len(warnings) == 1
    assert running.user.address in warnings[0].getMessage()
    assert "user-svc.mesh.local" in warnings[0].getMessage()


async def test_certificate_rotation_under_load(running: Running):
    secure = running.secure
    target = running.counters[0]
    old_serial = _peer_serial(target.address, secure)
    async with Mesh(secure.config(FRONT_IDENTITY, mesh_tls=True)) as mesh:
        stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(COUNTER))
        await mesh.resolver(COUNTER).wait_for(lambda snap: len(snap) == 2, timeout=10)
        load = SteadyLoad(stub, "rotation")
        load.start()
        await load.wait_acks(100)
        authority = load_authority(secure.certs / "ca.crt", secure.certs / "ca.key")
        fresh = issue_certificate(
            authority, mesh_identity_profile(COUNTER_IDENTITY), days=1
        )
        paths = identity_paths(secure.certs, COUNTER_IDENTITY)
        write_pair(paths.cert, paths.key, fresh)
        await asyncio.sleep(0.5)
        new_serial = await asyncio.to_thread(_peer_serial, target.address, secure)
        await load.wait_acks(100)
        report = await load.stop()

    assert report.failed == 0, report.errors
    assert new_serial != old_serial
    assert new_serial == fresh.cert.serial_number
