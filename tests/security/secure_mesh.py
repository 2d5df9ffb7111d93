"""A secured test mesh: certificates, etcd with TLS and auth, service env.

`SecureMesh` contains the files of one test: the certificates that
`meshctl certs init` writes, the password files that `meshctl auth init`
writes, and an etcd that requires a client certificate from the etcd CA and
has auth on. It builds the MeshConfig and the MESH_* variables of each
identity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from registry.certs import (
    ADMIN_IDENTITY,
    etcd_client_paths,
    etcd_server_paths,
    etcd_user,
    identity_paths,
)
from registry.cli_auth import init_auth, password_path
from registry.cli_certs import CertsOptions, init_certs
from registry.config import MeshConfig
from registry.etcd import EtcdClient
from registry.etcd_process import EtcdProcess, free_port
from registry.etcd_security import EtcdSecurity
from registry.mesh_tls import MeshTls

NAMESPACE = "/secure-mesh"


def etcd_tls_args(certs: Path) -> tuple[str, ...]:
    """etcd flags for TLS on client connections with client certificates."""
    server = etcd_server_paths(certs)
    return (
        "--cert-file",
        str(server.cert),
        "--key-file",
        str(server.key),
        "--trusted-ca-file",
        str(server.ca),
        "--client-cert-auth",
    )


@dataclass
class SecureMesh:
    root: Path
    token_ttl: int = 300

    def __post_init__(self) -> None:
        self.certs = self.root / "certs"
        self.auth = self.root / "auth"
        self.etcd = EtcdProcess(
            data_dir=self.root / "etcd-data",
            client_port=free_port(),
            peer_port=free_port(),
            log_path=self.root / "etcd.log",
            client_scheme="https",
            extra_args=(
                *etcd_tls_args(self.certs),
                "--auth-token",
                "simple",
                "--auth-token-ttl",
                str(self.token_ttl),
            ),
        )

    async def start(self) -> None:
        init_certs(CertsOptions(directory=self.certs))
        self.etcd.start()
        async with EtcdClient(self.config(ADMIN_IDENTITY, login=False)) as admin:
            await init_auth(admin, NAMESPACE, self.auth)

    def stop(self) -> None:
        self.etcd.kill()

    def security(
        self, identity: str | None, *, login: bool = True, cert: bool = True
    ) -> EtcdSecurity:
        """The etcd settings of identity; None gives TLS with no client cert."""
        ca = etcd_server_paths(self.certs).ca
        if identity is None:
            return EtcdSecurity(ca=ca)
        paths = etcd_client_paths(self.certs, identity)
        user = etcd_user(identity)
        return EtcdSecurity(
            ca=ca,
            cert=paths.cert if cert else None,
            key=paths.key if cert else None,
            user=user if login else None,
            password_file=password_path(self.auth, user) if login else None,
        )

    def tls(self, identity: str) -> MeshTls:
        paths = identity_paths(self.certs, identity)
        return MeshTls(paths.cert, paths.key, paths.ca)

    def config(
        self,
        identity: str | None,
        *,
        login: bool = True,
        cert: bool = True,
        mesh_tls: bool = False,
    ) -> MeshConfig:
        return MeshConfig.from_env(
            {},
            etcd_endpoints=self.etcd.client_url,
            namespace=NAMESPACE,
            lease_ttl=3,
            advertise_host="127.0.0.1",
            etcd_security=self.security(identity, login=login, cert=cert),
            tls=self.tls(identity) if mesh_tls and identity else None,
        )

    def service_env(self, identity: str) -> dict[str, str]:
        """MESH_ETCD_* and MESH_TLS_* variables of a service with identity."""
        tls = self.tls(identity)
        return {
            **self.etcd_env(identity),
            "MESH_TLS_CERT": str(tls.cert),
            "MESH_TLS_KEY": str(tls.key),
            "MESH_TLS_CA": str(tls.ca),
        }

    def etcd_env(self, identity: str) -> dict[str, str]:
        """MESH_ETCD_* variables of a service process with identity."""
        security = self.security(identity)
        return {
            "MESH_ETCD_CA": str(security.ca),
            "MESH_ETCD_CERT": str(security.cert),
            "MESH_ETCD_KEY": str(security.key),
            "MESH_ETCD_USER": str(security.user),
            "MESH_ETCD_PASSWORD_FILE": str(security.password_file),
        }

    def replace_security(self, config: MeshConfig, **changes: object) -> MeshConfig:
        security = dataclasses.replace(config.etcd_security, **changes)  # type: ignore[arg-type]
        return dataclasses.replace(config, etcd_security=security)
