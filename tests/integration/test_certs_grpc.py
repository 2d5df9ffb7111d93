"""Certificates from `meshctl certs init` on a real grpc.aio server with mTLS.

The server presents counter-svc's certificate and requires a client
certificate from the mesh CA. Clients set the TLS target name to the
service DNS name they expect, as mesh clients do, whatever the address.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from registry.certs import PeerIdentity, identity_paths, peer_identity
from registry.cli_certs import CertsOptions, init_certs
from tests.integration.service_process import REPO_ROOT

pytestmark = pytest.mark.integration

GRPCURL = REPO_ROOT / ".venv" / "bin" / "grpcurl"
HEALTH = health_pb2.HealthCheckRequest()
CALL_TIMEOUT = 5.0
# grpcurl finishes within a second on loopback; the margin is for slow machines.
GRPCURL_TIMEOUT = 30.0


# grpc-stubs does not declare the asyncio servicer of grpcio-health-checking.
class RecordingHealth(health.aio.HealthServicer):  # type: ignore[name-defined,misc]
    """The standard health service, recording the identity of each caller."""

    def __init__(self) -> None:
        super().__init__()
        self.callers: list[PeerIdentity | None] = []

    async def Check(self, request: Any, context: Any) -> Any:
        self.callers.append(peer_identity(context.auth_context()))
        return await super().Check(request, context)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    directory: Path = tmp_path_factory.mktemp("mesh") / "certs"
    init_certs(CertsOptions(directory))
    return directory


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory) -> Path:
    """Certificates with the same names, signed by another CA."""
    directory: Path = tmp_path_factory.mktemp("other") / "certs"
    init_certs(CertsOptions(directory))
    return directory


@pytest.fixture
async def server(certs) -> AsyncIterator[tuple[str, RecordingHealth]]:
    paths = identity_paths(certs, "counter-svc")
    credentials = grpc.ssl_server_credentials(
        [(paths.key.read_bytes(), paths.cert.read_bytes())],
        root_certificates=paths.ca.read_bytes(),
        require_client_auth=True,
    )
    servicer = RecordingHealth()
    grpc_server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
    reflection.enable_server_reflection(
        (health.SERVICE_NAME, reflection.SERVICE_NAME), grpc_server
    )
    port = grpc_server.add_secure_port("127.0.0.1:0", credentials)
    await grpc_server.start()
    yield f"127.0.0.1:{port}", servicer
    await grpc_server.stop(None)


def client_credentials(
    directory: Path, identity: str | None, ca_directory: Path | None = None
) -> grpc.ChannelCredentials:
    ca = identity_paths(ca_directory or directory, "front").ca.read_bytes()
    if identity is None:
        return grpc.ssl_channel_credentials(ca)
    paths = identity_paths(directory, identity)
    return grpc.ssl_channel_credentials(
        ca, paths.key.read_bytes(), paths.cert.read_bytes()
    )


async def check(
    address: str, credentials: grpc.ChannelCredentials, target_name: str
) -> Any:
    options = [("grpc.ssl_target_name_override", target_name)]
    async with grpc.aio.secure_channel(address, credentials, options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return await stub.Check(HEALTH, timeout=CALL_TIMEOUT)


async def test_call_with_expected_name_succeeds(server, certs):
    address, servicer = server

    reply = await check(
        address, client_credentials(certs, "front"), "counter-svc.mesh.local"
    )

    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert len(servicer.callers) == 1
    caller = servicer.callers[0]
    assert caller is not None
    assert caller.name == "front"
    assert caller.spiffe_id == "spiffe://mesh.local/front"


async def test_other_service_name_is_rejected(server, certs):
    address, servicer = server

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await check(address, client_credentials(certs, "front"), "user-svc.mesh.local")

    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.callers == []


async def test_client_without_certificate_is_rejected(server, certs):
    address, servicer = server

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await check(address, client_credentials(certs, None), "counter-svc.mesh.local")

    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.callers == []


async def test_client_from_another_ca_is_rejected(server, certs, other_certs):
    address, servicer = server
    # The client trusts the right CA but presents a certificate of another.
    credentials = client_credentials(other_certs, "front", ca_directory=certs)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await check(address, credentials, "counter-svc.mesh.local")

    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.callers == []


async def test_server_from_another_ca_is_rejected(server, other_certs):
    address, servicer = server

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await check(
            address, client_credentials(other_certs, "front"), "counter-svc.mesh.local"
        )

    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.callers == []


async def grpcurl(
    certs: Path,
    address: str,
    *args: str,
    authority: str = "counter-svc.mesh.local",
    client_cert: bool = True,
) -> tuple[int, str, str]:
    """Run grpcurl with the admin identity and return (status, stdout, stderr).

    It runs as an asyncio subprocess, because the server under test serves
    on this event loop.
    """
    admin = identity_paths(certs, "meshctl")
    tls = [f"-cacert={admin.ca}", f"-authority={authority}"]
    if client_cert:
        tls += [f"-cert={admin.cert}", f"-key={admin.key}"]
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        *tls,
        address,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(GRPCURL_TIMEOUT):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_grpcurl_lists_and_calls_with_certificates(server, certs):
    address, servicer = server

    listed = await grpcurl(certs, address, "list")
    described = await grpcurl(certs, address, "describe", "grpc.health.v1.Health")
    called = await grpcurl(certs, address, "grpc.health.v1.Health/Check")

    assert listed[0] == 0, listed[2]
    assert "grpc.health.v1.Health" in listed[1].split()
    assert described[0] == 0, described[2]
    assert "rpc Check" in described[1]
    assert called[0] == 0, called[2]
    assert '"status": "SERVING"' in called[1]
    assert [caller.name if caller else None for caller in servicer.callers] == [
        "meshctl"
    ]


async def test_grpcurl_with_wrong_authority_fails(server, certs):
    address, _ = server

    status, _, stderr = await grpcurl(
        certs, address, "list", authority="user-svc.mesh.local"
    )

    assert status != 0
    assert "user-svc.mesh.local" in stderr


async def test_grpcurl_without_client_certificate_fails(server, certs):
    address, servicer = server

    status, _, stderr = await grpcurl(certs, address, "list", client_cert=False)

    assert status != 0
    assert "Failed to dial target host" in stderr
    assert servicer.callers == []
