"""`meshctl up --secure`: the local mesh with TLS and auth everywhere.

    .mesh/certs/   the CAs and certificates (`meshctl certs init`), made once
    .mesh/auth/    etcd passwords (`meshctl auth init`), new on every start
    .mesh/etcd-secure/   the data of the embedded etcd, kept apart from the
                         plain one because auth stays on in its data

etcd serves https only, requires a client certificate from the etcd CA and
has auth on. Each child gets its own identity: its etcd certificate, user
and password file, and its mesh certificate for mTLS. meshctl itself uses
the admin identity, whose etcd certificate logs in as root.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from registry.certs import (
    ADMIN_IDENTITY,
    COUNTER_IDENTITY,
    FRONT_IDENTITY,
    INGRESS_IDENTITY,
    USER_IDENTITY,
    etcd_client_paths,
    etcd_server_paths,
    etcd_user,
    identity_paths,
    service_dns_name,
)
from registry.cli_auth import init_auth, password_path
from registry.cli_certs import CertsOptions, init_certs
from registry.cli_status import display_path, grpcurl_program
from registry.config import EtcdEndpoint, MeshConfig, resolve_host
from registry.etcd import EtcdClient
from registry.etcd_process import EtcdProcess, EtcdStartError
from registry.etcd_security import EtcdSecurity
from registry.mesh_tls import MeshTls

# The identity of each child that meshctl up starts, by program name.
CHILD_IDENTITIES = {
    "counter_svc": COUNTER_IDENTITY,
    "user_svc": USER_IDENTITY,
    "front": FRONT_IDENTITY,
    "ingress": INGRESS_IDENTITY,
}
# etcd's default token TTL; the clients log in again when a token expires.
TOKEN_TTL_SECONDS = 300


def etcd_tls_arguments(certs: Path) -> tuple[str, ...]:
    """etcd flags: TLS on client connections, certificates from the etcd CA."""
    server = etcd_server_paths(certs)
    return (
        "--cert-file",
        str(server.cert),
        "--key-file",
        str(server.key),
        "--trusted-ca-file",
        str(server.ca),
        "--client-cert-auth",
        "--auth-token",
        "simple",
        "--auth-token-ttl",
        str(TOKEN_TTL_SECONDS),
    )


@dataclass(frozen=True)
class SecureFiles:
    """The folders of the certificates and passwords of a secure local mesh."""

    state: Path

    @property
    def certs(self) -> Path:
        return self.state / "certs"

    @property
    def auth(self) -> Path:
        return self.state / "auth"

    def ensure_certs(self) -> bool:
        """Create the certificates unless the mesh CA exists; True if created."""
        if (self.certs / "ca.crt").exists():
            return False
        init_certs(CertsOptions(directory=self.certs))
        return True

    def admin_config(self, config: MeshConfig) -> MeshConfig:
        """Return config on https, as the admin identity with its certificates."""
        endpoints = tuple(
            EtcdEndpoint("https", endpoint.host, endpoint.port)
            for endpoint in config.etcd_endpoints
        )
        etcd = etcd_client_paths(self.certs, ADMIN_IDENTITY)
        security = EtcdSecurity(ca=etcd.ca, cert=etcd.cert, key=etcd.key)
        mesh = identity_paths(self.certs, ADMIN_IDENTITY)
        return dataclasses.replace(
            config,
            etcd_endpoints=endpoints,
            etcd_security=security,
            tls=MeshTls(mesh.cert, mesh.key, mesh.ca),
        )

    def etcd_process(self, config: MeshConfig) -> EtcdProcess:
        endpoint = config.etcd_endpoints[0]
        host = resolve_host(endpoint.host)
        if ":" in host:
            msg = (
                f"meshctl starts a secure etcd only at an IPv4 address, not "
                f"{endpoint.url}; start etcd there yourself"
            )
            raise EtcdStartError(msg)
        return EtcdProcess(
            data_dir=self.state / "etcd-secure",
            host=host,
            client_port=endpoint.port,
            log_path=self.state / "etcd.log",
            client_scheme="https",
            extra_args=etcd_tls_arguments(self.certs),
        )

    async def init_auth(self, config: MeshConfig) -> None:
        async with EtcdClient(config) as admin:
            await init_auth(admin, config.namespace, self.auth)

    def child_environment(self, program: str) -> dict[str, str]:
        """MESH_ETCD_* and MESH_TLS_* variables of the child running program."""
        identity = CHILD_IDENTITIES[program]
        etcd = etcd_client_paths(self.certs, identity)
        mesh = identity_paths(self.certs, identity)
        user = etcd_user(identity)
        return {
            "MESH_ETCD_CA": str(etcd.ca.absolute()),
            "MESH_ETCD_CERT": str(etcd.cert.absolute()),
            "MESH_ETCD_KEY": str(etcd.key.absolute()),
            "MESH_ETCD_USER": user,
            "MESH_ETCD_PASSWORD_FILE": str(password_path(self.auth, user).absolute()),
            "MESH_TLS_CERT": str(mesh.cert.absolute()),
            "MESH_TLS_KEY": str(mesh.key.absolute()),
            "MESH_TLS_CA": str(mesh.ca.absolute()),
        }

    def grpcurl_flags(self, service: str | None = None) -> str:
        """grpcurl's TLS flags as the admin identity.

        With service, grpcurl checks that the server presents that service's
        identity, as mesh clients do. Without, it checks the address, which
        the ingress certificate names (localhost and the loopback addresses).
        """
        admin = identity_paths(self.certs, ADMIN_IDENTITY)
        flags = (
            f"-cacert {display_path(admin.ca)} -cert {display_path(admin.cert)} "
            f"-key {display_path(admin.key)}"
        )
        if service is not None:
            flags += f" -servername {service_dns_name(service)}"
        return flags

    def grpcurl_command(self, address: str, service: str | None = None) -> str:
        return f"{grpcurl_program()} {self.grpcurl_flags(service)} {address} list"
