"""Mesh configuration, read from the environment and overridden by flags.

| variable              | default                 | meaning                          |
|-----------------------|-------------------------|----------------------------------|
| MESH_ETCD_ENDPOINTS   | http://127.0.0.1:2379   | comma-separated etcd client URLs |
| MESH_NAMESPACE        | /mesh                   | key prefix of this mesh in etcd  |
| MESH_LEASE_TTL        | 10                      | registration lease TTL, seconds  |
| MESH_ADVERTISE_HOST   | (detected)              | host that other processes dial   |

TLS and login settings of the etcd connection (MESH_ETCD_CA, MESH_ETCD_CERT,
MESH_ETCD_KEY, MESH_ETCD_USER, MESH_ETCD_PASSWORD_FILE) are listed in
registry.etcd_security, and the mTLS files of the mesh (MESH_TLS_CERT,
MESH_TLS_KEY, MESH_TLS_CA) in registry.mesh_tls.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from registry.errors import AdvertiseAddressError, ConfigError
from registry.etcd_security import EtcdSecurity
from registry.mesh_tls import MeshTls

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
DEFAULT_NAMESPACE = "/mesh"
DEFAULT_LEASE_TTL = 10
# etcd grants leases of at least its minimum TTL, and a TTL below about 3 s
# leaves no room for a keepalive round trip at a third of the TTL.
MIN_LEASE_TTL = 3
MAX_LEASE_TTL = 3600

_NAMESPACE_PATTERN = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")


@dataclass(frozen=True)
class EtcdEndpoint:
    """One etcd client URL, split into the parts the client needs."""

    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"{self.scheme}://{_bracket(self.host)}:{self.port}"

    @property
    def secure(self) -> bool:
        return self.scheme == "https"


@dataclass(frozen=True)
class MeshConfig:
    """Settings shared by registration, discovery and the command line."""

    etcd_endpoints: tuple[EtcdEndpoint, ...] = field(
        default_factory=lambda: parse_endpoints(DEFAULT_ENDPOINTS)
    )
    namespace: str = DEFAULT_NAMESPACE
    lease_ttl: int = DEFAULT_LEASE_TTL
    advertise_host: str | None = None
    etcd_security: EtcdSecurity = field(default_factory=EtcdSecurity)
    tls: MeshTls | None = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        etcd_endpoints: str | None = None,
        namespace: str | None = None,
        lease_ttl: int | str | None = None,
        advertise_host: str | None = None,
        etcd_security: EtcdSecurity | None = None,
        tls: MeshTls | None = None,
    ) -> MeshConfig:
        """Build the configuration from MESH_* variables; arguments win."""
        env = os.environ if environ is None else environ
        raw_endpoints = (
            etcd_endpoints or env.get("MESH_ETCD_ENDPOINTS") or (DEFAULT_ENDPOINTS)
        )
        raw_ttl = lease_ttl if lease_ttl is not None else env.get("MESH_LEASE_TTL")
        host = advertise_host or env.get("MESH_ADVERTISE_HOST") or None
        endpoints = parse_endpoints(raw_endpoints)
        if etcd_security is None:
            etcd_security = EtcdSecurity.from_env(env, endpoints)
        else:
            etcd_security.check(endpoints)
        return cls(
            etcd_endpoints=endpoints,
            namespace=parse_namespace(
                namespace or env.get("MESH_NAMESPACE") or DEFAULT_NAMESPACE
            ),
            lease_ttl=parse_lease_ttl(raw_ttl),
            advertise_host=validate_advertise_host(host) if host else None,
            etcd_security=etcd_security,
            tls=tls if tls is not None else MeshTls.from_env(env),
        )

    @property
    def endpoint_urls(self) -> tuple[str, ...]:
        return tuple(endpoint.url for endpoint in self.etcd_endpoints)

    def services_prefix(self) -> str:
        """Return the key prefix under which every service registers."""
        return f"{self.namespace}/services/"

    def service_prefix(self, service: str) -> str:
        """Return the prefix of one service, ending in '/' so that a
        service named `counter` never matches `counter2`."""
        return f"{self.namespace}/services/{service}/"


def parse_endpoints(raw: str) -> tuple[EtcdEndpoint, ...]:
    """Parse comma-separated etcd URLs such as `http://10.0.0.1:2379`."""
    endpoints: list[EtcdEndpoint] = []
    for part in raw.split(","):
        item = part.strip()
        if not item:
            continue
        if "://" not in item:
            item = f"http://{item}"
        parts = urlsplit(item)
        if parts.scheme not in {"http", "https"}:
            raise ConfigError(
                "MESH_ETCD_ENDPOINTS",
                f"unsupported scheme in {item!r}; use http:// or https://",
            )
        try:
            port = parts.port or 2379
        except ValueError as exc:
            raise ConfigError(
                "MESH_ETCD_ENDPOINTS", f"invalid port in {item!r}"
            ) from exc
        if not parts.hostname:
            raise ConfigError("MESH_ETCD_ENDPOINTS", f"missing host in {item!r}")
        endpoints.append(EtcdEndpoint(parts.scheme, parts.hostname, port))
    if not endpoints:
        raise ConfigError(
            "MESH_ETCD_ENDPOINTS",
            "no endpoint given; set it to a URL such as http://127.0.0.1:2379",
        )
    return tuple(endpoints)


def parse_namespace(raw: str) -> str:
    """Validate a namespace such as `/mesh`: no trailing slash, no blanks."""
    namespace = raw.rstrip("/") if raw != "/" else raw
    if not _NAMESPACE_PATTERN.fullmatch(namespace):
        raise ConfigError(
            "MESH_NAMESPACE",
            f"invalid namespace {raw!r}; use a path such as /mesh made of "
            "letters, digits, '_', '-' and '.'",
        )
    return namespace


def parse_lease_ttl(raw: int | str | None) -> int:
    """Validate the lease TTL in whole seconds."""
    if raw is None or raw == "":
        return DEFAULT_LEASE_TTL
    try:
        ttl = int(raw)
    except ValueError as exc:
        raise ConfigError(
            "MESH_LEASE_TTL", f"invalid value {raw!r}; use whole seconds such as 10"
        ) from exc
    if not MIN_LEASE_TTL <= ttl <= MAX_LEASE_TTL:
        raise ConfigError(
            "MESH_LEASE_TTL",
            f"{ttl} is out of range; use {MIN_LEASE_TTL} to {MAX_LEASE_TTL} seconds",
        )
    return ttl


def validate_advertise_host(host: str) -> str:
    """Reject hosts that other processes cannot dial, such as 0.0.0.0."""
    host = host.strip().strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not host or any(char.isspace() or char in "/:" for char in host):
            raise AdvertiseAddressError(
                "MESH_ADVERTISE_HOST", f"invalid host {host!r}"
            ) from None
        return host
    if address.is_unspecified:
        raise AdvertiseAddressError(
            "MESH_ADVERTISE_HOST",
            f"{host!r} is a wildcard address that no client can dial; "
            "set the host's own address, such as 127.0.0.1",
        )
    return host


def format_address(host: str, port: int) -> str:
    """Join host and port, bracketing IPv6 literals."""
    if port <= 0:
        raise AdvertiseAddressError(
            "port", f"port {port} cannot be dialled; register the bound port"
        )
    return f"{_bracket(host)}:{port}"


def detect_advertise_host(endpoints: tuple[EtcdEndpoint, ...]) -> str:
    """Return the local address that routes to the first resolvable endpoint.

    A UDP connect sends no packet. It only makes the kernel choose the
    source address it would use for that destination.
    """
    errors: list[str] = []
    for endpoint in endpoints:
        try:
            target = resolve_host(endpoint.host)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        family = socket.AF_INET6 if ":" in target else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((target, endpoint.port))
            local = str(probe.getsockname()[0])
        return validate_advertise_host(local)
    raise ConfigError("MESH_ETCD_ENDPOINTS", "; ".join(errors))


def resolve_host(host: str) -> str:
    """Resolve a host name to one IP address; IP literals pass through."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(
            "MESH_ETCD_ENDPOINTS", f"cannot resolve host {host!r}: {exc}"
        ) from exc
    # Prefer IPv4 so that `localhost` maps to 127.0.0.1, as etcd listens there.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0])


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
