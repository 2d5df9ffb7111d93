"""mTLS between mesh processes: server and channel credentials from PEM files.

| variable       | meaning                                              |
|----------------|------------------------------------------------------|
| MESH_TLS_CERT  | this process's mesh certificate (PEM)                |
| MESH_TLS_KEY   | its private key (PEM)                                |
| MESH_TLS_CA    | the mesh CA that signs every peer's certificate      |

With the three set, a server requires a client certificate from the mesh CA.
A client sets the TLS target name to the DNS name of the service it calls
(registry.certs.service_dns_name), whatever address discovery gave, so a
server with another identity fails the handshake.

Both sides read the files again when their modification time changes. The
server does so through grpc's dynamic server credentials: new connections get
the new certificate, and calls in flight finish on the old connections. A
client uses the new files only for channels that it opens after the change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from registry.certs import service_dns_name
from registry.errors import ConfigError

logger = logging.getLogger(__name__)

ChannelOptions = tuple[tuple[str, int | str], ...]


@dataclass(frozen=True)
class MeshTls:
    """The certificate, key and CA files of one mesh process."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MeshTls | None:
        """Read MESH_TLS_*; None when none is set, ConfigError when some are."""
        names = ("MESH_TLS_CERT", "MESH_TLS_KEY", "MESH_TLS_CA")
        values = {name: env.get(name, "").strip() for name in names}
        given = [name for name in names if values[name]]
        if not given:
            return None
        missing = [name for name in names if not values[name]]
        if missing:
            raise ConfigError(
                missing[0],
                f"{', '.join(given)} set but {', '.join(missing)} not; "
                "set all three for mTLS, or none",
            )
        return cls(
            Path(values["MESH_TLS_CERT"]),
            Path(values["MESH_TLS_KEY"]),
            Path(values["MESH_TLS_CA"]),
        )

    def read(self) -> tuple[bytes, bytes, bytes]:
        """Return the certificate chain, the key and the CA as PEM bytes."""
        return (
            _read(self.cert, "MESH_TLS_CERT"),
            _read(self.key, "MESH_TLS_KEY"),
            _read(self.ca, "MESH_TLS_CA"),
        )

    def mtimes(self) -> tuple[int, int, int]:
        return tuple(  # type: ignore[return-value]
            path.stat().st_mtime_ns for path in (self.cert, self.key, self.ca)
        )


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror}") from None


class _ServerCertificates:
    """grpc's certificate_configuration_fetcher: new files once they change."""

    def __init__(self, tls: MeshTls) -> None:
        self._tls = tls
        self._mtimes = tls.mtimes()

    def initial(self) -> grpc.ServerCertificateConfiguration:
        return self._configuration()

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        # grpc calls this on each new TLS handshake; None keeps the current one.
        try:
            mtimes = self._tls.mtimes()
            if mtimes == self._mtimes:
                return None
            configuration = self._configuration()
        except (OSError, ConfigError) as exc:
            logger.warning("keeping the current certificate: %s", exc)
            return None
        self._mtimes = mtimes
        logger.info("loaded the new certificate %s", self._tls.cert)
        return configuration

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        chain, key, ca = self._tls.read()
        return grpc.ssl_server_certificate_configuration(
            [(key, chain)], root_certificates=ca
        )


def server_credentials(tls: MeshTls) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate from the mesh CA."""
    certificates = _ServerCertificates(tls)
    # grpc-stubs types the fetcher without the None that keeps the current
    # configuration, which grpc documents and accepts.
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial(),
        certificates,  # type: ignore[arg-type]
        require_client_authentication=True,
    )


class ChannelFactory:
    """A factory of per-endpoint channels that check the service's identity."""

    def __init__(self, tls: MeshTls, service: str) -> None:
        self.tls = tls
        self.service = service
        self.expected_name = service_dns_name(service)
        self._mtimes: tuple[int, int, int] | None = None
        self._credentials: grpc.ChannelCredentials | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """Return channel credentials, read again after the files change."""
        mtimes = self.tls.mtimes()
        if self._credentials is None or mtimes != self._mtimes:
            chain, key, ca = self.tls.read()
            self._credentials = grpc.ssl_channel_credentials(ca, key, chain)
            self._mtimes = mtimes
        return self._credentials

    def __call__(self, address: str, options: ChannelOptions) -> grpc.aio.Channel:
        # The override makes gRPC check the certificate against the service's
        # name, not the address that discovery returned.
        named = (*options, ("grpc.ssl_target_name_override", self.expected_name))
        return grpc.aio.secure_channel(address, self.credentials(), options=named)
