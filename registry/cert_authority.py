"""Create the mesh CA, the etcd CA and the certificates they sign.

    mesh = create_authority("etcd-mesh CA", days=365)
    leaf = issue_certificate(mesh, mesh_identity_profile("counter-svc"), days=90)
    write_pair(paths.cert, paths.key, leaf)

Every key is ECDSA on the P-256 curve, which gRPC (BoringSSL), etcd (Go),
grpcurl and browsers all accept. Leaf certificates start 5 minutes in the
past, so that hosts whose clocks lag a little accept them at once.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from registry.certs import (
    CLIENT_ONLY_IDENTITIES,
    EDGE_IDENTITIES,
    CertificateError,
    dns_name,
    etcd_user,
    spiffe_id,
)

ORGANIZATION = "etcd-mesh"
CLOCK_SKEW = dt.timedelta(minutes=5)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o644

GeneralName = x509.DNSName | x509.IPAddress | x509.UniformResourceIdentifier


@dataclass(frozen=True)
class Authority:
    """A CA certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    """A signed leaf certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class LeafProfile:
    """The subject, names and allowed uses of a leaf certificate."""

    common_name: str
    names: tuple[GeneralName, ...]
    server: bool
    client: bool


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def host_name(value: str) -> GeneralName:
    """Return an IP address SAN for an address, and a DNS SAN otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    label = value.strip().rstrip(".").lower()
    if not label or any(c.isspace() or c in "/:@" for c in label):
        msg = f"invalid host name {value!r}; use a DNS name or an IP address"
        raise CertificateError(msg)
    return x509.DNSName(label)


def create_authority(common_name: str, *, days: int) -> Authority:
    """Create a self-signed CA that signs leaf certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    subject = _name(common_name)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        # path_length=0: the CA signs leaves, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def issue_certificate(
    authority: Authority, profile: LeafProfile, *, days: int
) -> Issued:
    """Sign a new key for profile with authority.

    Raises CertificateError when the certificate would outlive the CA.
    """
    now = _now()
    not_after = now + dt.timedelta(days=days)
    ca_end = authority.cert.not_valid_after_utc
    if not_after > ca_end:
        msg = (
            f"a certificate valid for {days} days would outlive the CA, which "
            f"expires on {ca_end:%Y-%m-%d}; use fewer days or a new CA"
        )
        raise CertificateError(msg)
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if profile.server else []
    if profile.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_key_id = x509.SubjectKeyIdentifier.from_public_key(authority.key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(profile.common_name))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(profile.names)), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    return Issued(cert, key)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def mesh_identity_profile(identity: str, hosts: tuple[str, ...] = ()) -> LeafProfile:
    """Describe the mesh certificate of identity.

    Services, the front and the ingress both serve and call, so their
    certificates allow TLS server and client use. The edge identities (the
    front and the ingress) also carry localhost, the loopback addresses and
    hosts, because browsers and grpcurl reach them by host name.
    """
    names: list[GeneralName] = [
        x509.DNSName(dns_name(identity)),
        x509.UniformResourceIdentifier(spiffe_id(identity)),
    ]
    if identity in EDGE_IDENTITIES:
        names.extend(host_name(host) for host in (*LOOPBACK_NAMES, *hosts))
    return LeafProfile(
        common_name=identity,
        names=tuple(names),
        server=identity not in CLIENT_ONLY_IDENTITIES,
        client=True,
    )


def etcd_client_profile(identity: str) -> LeafProfile:
    """Describe an etcd client certificate: etcd reads the user from its CN."""
    user = etcd_user(identity)
    return LeafProfile(
        common_name=user,
        names=(x509.UniformResourceIdentifier(spiffe_id(identity)),),
        server=False,
        client=True,
    )


def etcd_server_profile(hosts: tuple[str, ...] = ()) -> LeafProfile:
    """Describe etcd's server certificate, for local etcd and hosts."""
    names = tuple(host_name(host) for host in (*LOOPBACK_NAMES, *hosts))
    return LeafProfile(common_name="etcd", names=names, server=True, client=False)


def write_authority(cert_path: Path, key_path: Path, authority: Authority) -> None:
    write_pair(cert_path, key_path, Issued(authority.cert, authority.key))


def write_pair(cert_path: Path, key_path: Path, issued: Issued) -> None:
    """Write a certificate and its key as PEM; the key file gets mode 0600.

    Each file is written to a temporary name and renamed into place, so a
    process that reloads the files never reads half of one.
    """
    key_pem = issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The key first: a reader that sees the new certificate finds its key.
    _write_atomic(key_path, key_pem, KEY_FILE_MODE)
    cert_pem = issued.cert.public_bytes(serialization.Encoding.PEM)
    _write_atomic(cert_path, cert_pem, CERT_FILE_MODE)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    # O_EXCL with the mode set at creation: the key is never readable by
    # others, not even for the moment between open and chmod.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    temporary.replace(path)


def load_authority(cert_path: Path, key_path: Path) -> Authority:
    """Read a CA written by write_authority."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        msg = f"cannot read the CA from {cert_path} and {key_path}: {exc}"
        raise CertificateError(msg) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        msg = f"the CA key in {key_path} is not an ECDSA key"
        raise CertificateError(msg)
    return Authority(cert, key)
