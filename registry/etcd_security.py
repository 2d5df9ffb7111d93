"""TLS and login settings of the etcd connection, read from the environment.

| variable                | meaning                                               |
|-------------------------|-------------------------------------------------------|
| MESH_ETCD_CA            | PEM file of the CA that signed etcd's server cert     |
| MESH_ETCD_CERT          | PEM client certificate that etcd requires             |
| MESH_ETCD_KEY           | PEM private key of MESH_ETCD_CERT                     |
| MESH_ETCD_SERVER_NAME   | name to check in etcd's certificate (default: host)   |
| MESH_ETCD_USER          | etcd user to log in as                                |
| MESH_ETCD_PASSWORD_FILE | file whose first line is that user's password         |
| MESH_ETCD_PASSWORD      | the password itself; prefer the file                  |

The password is read when the client opens and never appears in a repr, a
log line or an error message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from registry.errors import ConfigError


class _Endpoint(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def secure(self) -> bool: ...
    @property
    def url(self) -> str: ...


class TlsMaterial(NamedTuple):
    """PEM bytes for etcd3aio: the CA, the client key and the client chain."""

    ca_cert: bytes
    cert_key: bytes | None
    cert_chain: bytes | None


@dataclass(frozen=True)
class EtcdSecurity:
    """How to reach a secured etcd: TLS files and an optional login."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None
    user: str | None = None
    password_file: Path | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.ca is not None

    @property
    def login(self) -> bool:
        return self.user is not None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], endpoints: Sequence[_Endpoint]
    ) -> EtcdSecurity:
        """Read MESH_ETCD_* and check that the settings fit the endpoints."""

        def path(name: str) -> Path | None:
            value = env.get(name, "").strip()
            return Path(value) if value else None

        security = cls(
            ca=path("MESH_ETCD_CA"),
            cert=path("MESH_ETCD_CERT"),
            key=path("MESH_ETCD_KEY"),
            server_name=env.get("MESH_ETCD_SERVER_NAME", "").strip() or None,
            user=env.get("MESH_ETCD_USER", "").strip() or None,
            password_file=path("MESH_ETCD_PASSWORD_FILE"),
            password=env.get("MESH_ETCD_PASSWORD") or None,
        )
        security.check(endpoints)
        return security

    def check(self, endpoints: Sequence[_Endpoint]) -> None:
        """Raise ConfigError for settings that cannot work together."""
        self._check_tls(endpoints)
        self._check_login()

    def _check_tls(self, endpoints: Sequence[_Endpoint]) -> None:
        secure = [endpoint for endpoint in endpoints if endpoint.secure]
        if secure and self.ca is None:
            raise ConfigError(
                "MESH_ETCD_CA",
                f"{secure[0].url} uses https:// but no CA is set; set "
                "MESH_ETCD_CA to the PEM file of etcd's CA",
            )
        plain = [endpoint for endpoint in endpoints if not endpoint.secure]
        if self.ca is not None and plain:
            raise ConfigError(
                "MESH_ETCD_ENDPOINTS",
                f"{plain[0].url} uses http:// while MESH_ETCD_CA is set; "
                "use https:// for every endpoint",
            )
        if (self.cert is None) != (self.key is None):
            raise ConfigError(
                "MESH_ETCD_CERT",
                "set both MESH_ETCD_CERT and MESH_ETCD_KEY, or neither",
            )
        if self.cert is not None and self.ca is None:
            raise ConfigError(
                "MESH_ETCD_CERT",
                "a client certificate needs TLS; set MESH_ETCD_CA and use https://",
            )

    def _check_login(self) -> None:
        has_secret = self.password is not None or self.password_file is not None
        if self.user is None and has_secret:
            raise ConfigError(
                "MESH_ETCD_USER", "a password is set but no user; set MESH_ETCD_USER"
            )
        if self.user is not None and not has_secret:
            raise ConfigError(
                "MESH_ETCD_PASSWORD_FILE",
                f"user {self.user!r} has no password; set MESH_ETCD_PASSWORD_FILE "
                "to a file that contains it",
            )
        if self.password is not None and self.password_file is not None:
            raise ConfigError(
                "MESH_ETCD_PASSWORD",
                "both MESH_ETCD_PASSWORD and MESH_ETCD_PASSWORD_FILE are set; "
                "keep only the file",
            )

    def tls_material(self) -> TlsMaterial | None:
        """Read the TLS files, or return None when TLS is off."""
        if self.ca is None:
            return None
        key = _read(self.key, "MESH_ETCD_KEY") if self.key else None
        chain = _read(self.cert, "MESH_ETCD_CERT") if self.cert else None
        return TlsMaterial(_read(self.ca, "MESH_ETCD_CA"), key, chain)

    def read_password(self) -> str:
        """Return the password from the setting or the first line of its file."""
        if self.password is not None:
            return self.password
        if self.password_file is None:
            raise ConfigError("MESH_ETCD_PASSWORD_FILE", "no password file is set")
        raw = _read(self.password_file, "MESH_ETCD_PASSWORD_FILE")
        lines = raw.decode("utf-8", errors="strict").splitlines()
        if not lines or not lines[0]:
            raise ConfigError(
                "MESH_ETCD_PASSWORD_FILE",
                f"{self.password_file} is empty; run `meshctl auth init` to write it",
            )
        return lines[0]


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        # strerror only: the message names the file, never its contents.
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror}") from None
