"""Identities of the mesh: names, certificate files and the peer of a TLS call.

Every process of the mesh has an identity name: `counter-svc`, `user-svc`,
`front`, `ingress`, or `meshctl` (the admin identity). Its mesh certificate
names it twice in the subject alternative name:

    DNS  <name>.mesh.local              what gRPC's hostname check compares
    URI  spiffe://mesh.local/<name>     a SPIFFE ID, for authorization

A client that calls a service sets the TLS target name to the service's DNS
name (`service_dns_name`), whatever address discovery returned, so a server
that presents another identity fails the handshake.

`meshctl certs init` writes the files (see registry.cert_authority):

    <dir>/ca.crt, ca.key                 the mesh CA
    <dir>/<name>.crt, <name>.key         one mesh identity
    <dir>/etcd/ca.crt, etcd/ca.key       a separate CA for etcd
    <dir>/etcd/server.crt, server.key    etcd's server certificate
    <dir>/etcd/<name>.crt, <name>.key    one etcd client; the common name is
                                         the etcd user (`etcd_user`)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from registry.errors import MeshError

MESH_DOMAIN = "mesh.local"
SPIFFE_PREFIX = f"spiffe://{MESH_DOMAIN}/"
DEFAULT_CERT_DIR = Path(".mesh/certs")

COUNTER_IDENTITY = "counter-svc"
USER_IDENTITY = "user-svc"
FRONT_IDENTITY = "front"
INGRESS_IDENTITY = "ingress"
ADMIN_IDENTITY = "meshctl"
# Identities that `meshctl certs init` creates, in this order.
DEFAULT_IDENTITIES = (
    COUNTER_IDENTITY,
    USER_IDENTITY,
    FRONT_IDENTITY,
    INGRESS_IDENTITY,
    ADMIN_IDENTITY,
)
# Identities that also serve plain clients (browsers, grpcurl) by host name,
# so their certificates carry localhost and the loopback addresses too.
EDGE_IDENTITIES = frozenset({FRONT_IDENTITY, INGRESS_IDENTITY})
# Identities that only call and never serve.
CLIENT_ONLY_IDENTITIES = frozenset({ADMIN_IDENTITY})

# Proto service name -> identity of the process that serves it. A service
# that is not listed gets a derived name (see service_identity).
SERVICE_IDENTITIES = {
    "mesh.counter.v1.CounterService": COUNTER_IDENTITY,
    "mesh.user.v1.UserService": USER_IDENTITY,
}

# etcd enables auth only once a user named `root` exists, and that user has
# every right, so the admin identity logs in to etcd as `root`.
ETCD_ROOT_USER = "root"
_ETCD_USERS = {ADMIN_IDENTITY: ETCD_ROOT_USER}

IDENTITY_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_CAMEL_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+")


class CertificateError(MeshError):
    """A certificate directory, file or identity name is invalid."""


class IdentityPaths(NamedTuple):
    """Files of one identity: its certificate, its private key and the CA."""

    cert: Path
    key: Path
    ca: Path


def check_identity(name: str) -> str:
    """Return name if it can be a DNS label and an etcd user, or raise."""
    if not IDENTITY_PATTERN.fullmatch(name):
        msg = (
            f"invalid identity name {name!r}; use 1 to 63 characters from "
            f"a-z, 0-9 and '-', starting with a letter"
        )
        raise CertificateError(msg)
    return name


def identity_paths(directory: Path | str, name: str) -> IdentityPaths:
    """Return the mesh certificate, key and CA files of identity name."""
    root = Path(directory)
    check_identity(name)
    return IdentityPaths(root / f"{name}.crt", root / f"{name}.key", root / "ca.crt")


def etcd_client_paths(directory: Path | str, name: str) -> IdentityPaths:
    """Return the etcd client certificate, key and etcd CA of identity name."""
    root = Path(directory) / "etcd"
    check_identity(name)
    return IdentityPaths(root / f"{name}.crt", root / f"{name}.key", root / "ca.crt")


def etcd_server_paths(directory: Path | str) -> IdentityPaths:
    """Return etcd's server certificate, its key and the etcd CA."""
    root = Path(directory) / "etcd"
    return IdentityPaths(root / "server.crt", root / "server.key", root / "ca.crt")


def service_identity(service: str) -> str:
    """Return the identity that serves a proto service.

    A service missing from SERVICE_IDENTITIES gets its last name part in
    kebab case, without a `Service` suffix, plus `-svc`: the service
    `shop.v1.OrderHistoryService` is served by `order-history-svc`.
    """
    known = SERVICE_IDENTITIES.get(service)
    if known is not None:
        return known
    short = service.rsplit(".", 1)[-1].removesuffix("Service")
    words = [word.lower() for word in _CAMEL_WORD.findall(short)]
    if not words:
        msg = f"invalid service name {service!r}; use a full proto name"
        raise CertificateError(msg)
    return check_identity("-".join([*words, "svc"]))


def dns_name(identity: str) -> str:
    return f"{check_identity(identity)}.{MESH_DOMAIN}"


def service_dns_name(service: str) -> str:
    """Return the TLS target name that a client of service expects."""
    return dns_name(service_identity(service))


def spiffe_id(identity: str) -> str:
    return f"{SPIFFE_PREFIX}{check_identity(identity)}"


def etcd_user(identity: str) -> str:
    """Return the etcd user that identity's etcd client certificate logs in as."""
    return _ETCD_USERS.get(identity, check_identity(identity))


@dataclass(frozen=True)
class PeerIdentity:
    """The names in a peer's certificate, which the TLS handshake verified."""

    dns_names: tuple[str, ...]
    uris: tuple[str, ...]
    common_name: str | None

    @property
    def spiffe_id(self) -> str | None:
        """The first URI name in the mesh's SPIFFE trust domain, if any."""
        return next((uri for uri in self.uris if uri.startswith(SPIFFE_PREFIX)), None)

    @property
    def name(self) -> str | None:
        """The mesh identity name, from the SPIFFE ID or else the DNS name."""
        spiffe = self.spiffe_id
        if spiffe is not None:
            return spiffe.removeprefix(SPIFFE_PREFIX)
        suffix = f".{MESH_DOMAIN}"
        for dns in self.dns_names:
            if dns.endswith(suffix):
                return dns.removesuffix(suffix)
        return None

    def __str__(self) -> str:
        names = [*self.uris, *self.dns_names]
        if not names and self.common_name:
            names = [f"CN={self.common_name}"]
        return ", ".join(names) or "a certificate with no name"


AuthContext = Mapping[str, Iterable[bytes]]


def peer_identity(auth_context: AuthContext) -> PeerIdentity | None:
    """Read the peer's identity from a grpc auth context.

    Pass `context.auth_context()` of a servicer context. Returns None when
    the peer sent no certificate, as on an insecure port. grpc (checked with
    grpcio 1.85) lists the DNS names under `peer_dns` and the URI names
    under `peer_uri`; IP address names are left out.
    """

    def values(key: str) -> tuple[str, ...]:
        return tuple(value.decode() for value in auth_context.get(key, ()))

    dns_names = values("peer_dns")
    uris = values("peer_uri")
    common_names = values("x509_common_name")
    if not dns_names and not uris and not common_names:
        return None
    return PeerIdentity(
        dns_names=dns_names,
        uris=uris,
        common_name=common_names[0] if common_names else None,
    )
