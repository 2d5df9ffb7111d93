"""`meshctl certs init`: create the mesh CA, the etcd CA and every certificate.

    meshctl certs init [--dir DIR] [--force] [--days N] [--ca-days N]
                       [--host NAME]... [--identity NAME]...

The command rejects a directory that already has a CA unless --force is
given, because a new CA invalidates every certificate that the old one
signed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from registry.cert_authority import (
    Authority,
    Issued,
    LeafProfile,
    create_authority,
    etcd_client_profile,
    etcd_server_profile,
    issue_certificate,
    mesh_identity_profile,
    write_authority,
    write_pair,
)
from registry.certs import (
    ADMIN_IDENTITY,
    COUNTER_IDENTITY,
    DEFAULT_CERT_DIR,
    DEFAULT_IDENTITIES,
    CertificateError,
    check_identity,
    dns_name,
    etcd_client_paths,
    etcd_server_paths,
    etcd_user,
    identity_paths,
)
from registry.cli_common import echo

DEFAULT_CA_DAYS = 365
DEFAULT_LEAF_DAYS = 90
DIRECTORY_MODE = 0o700


@dataclass(frozen=True)
class CertsOptions:
    directory: Path
    force: bool = False
    days: int = DEFAULT_LEAF_DAYS
    ca_days: int = DEFAULT_CA_DAYS
    hosts: tuple[str, ...] = ()
    identities: tuple[str, ...] = DEFAULT_IDENTITIES


def positive_days(raw: str) -> int:
    """Parse a number of days for argparse."""
    try:
        days = int(raw)
    except ValueError:
        days = 0
    if days <= 0:
        msg = f"invalid number of days {raw!r}; use a whole number above 0"
        raise argparse.ArgumentTypeError(msg)
    return days


def add_certs_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add `certs init` to meshctl's subcommands."""
    certs = commands.add_parser("certs", help="create TLS certificates for the mesh")
    actions = certs.add_subparsers(
        dest="certs_command", required=True, metavar="ACTION"
    )
    init = actions.add_parser(
        "init",
        help="create the mesh CA, the etcd CA and a certificate per identity",
        description="Create a mesh CA and a certificate and key for each "
        "identity (counter-svc, user-svc, front, ingress, meshctl), and a "
        "separate etcd CA with etcd's server certificate and an etcd client "
        "certificate per identity. Keys are ECDSA P-256, written with mode 0600.",
    )
    init.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_CERT_DIR,
        metavar="DIR",
        help=f"output directory (default: {DEFAULT_CERT_DIR})",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="replace the CAs and certificates already in DIR",
    )
    init.add_argument(
        "--days",
        type=positive_days,
        default=DEFAULT_LEAF_DAYS,
        metavar="N",
        help=f"validity of each leaf certificate in days (default: {DEFAULT_LEAF_DAYS})",
    )
    init.add_argument(
        "--ca-days",
        type=positive_days,
        default=DEFAULT_CA_DAYS,
        metavar="N",
        help=f"validity of each CA certificate in days (default: {DEFAULT_CA_DAYS})",
    )
    init.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name or IP address for the etcd server, front and "
        "ingress certificates, which clients reach by host name; repeatable "
        "(localhost, 127.0.0.1 and ::1 are always included)",
    )
    init.add_argument(
        "--identity",
        action="append",
        default=[],
        metavar="NAME",
        help="extra identity to create besides the default ones, such as "
        "order-history-svc; repeatable",
    )


def options_from_args(args: argparse.Namespace) -> CertsOptions:
    extra = tuple(check_identity(name) for name in args.identity)
    identities = tuple(dict.fromkeys((*DEFAULT_IDENTITIES, *extra)))
    return CertsOptions(
        directory=args.dir,
        force=args.force,
        days=args.days,
        ca_days=args.ca_days,
        hosts=tuple(args.host),
        identities=identities,
    )


async def run_certs(options: CertsOptions) -> int:
    """Create every certificate, print where they are and return 0."""
    for line in init_certs(options):
        echo(line)
    return 0


def init_certs(options: CertsOptions) -> list[str]:
    """Write the CAs and certificates and return the output lines.

    Raises CertificateError when DIR already has a CA and force is not set,
    or when a leaf would outlive its CA.
    """
    directory = options.directory
    mesh_ca = directory / "ca.crt"
    etcd_ca = etcd_server_paths(directory).ca
    existing = [path for path in (mesh_ca, etcd_ca) if path.exists()]
    if existing and not options.force:
        msg = (
            f"{directory} already has a CA ({existing[0]}); pass --force to "
            f"replace it and every certificate that it signed"
        )
        raise CertificateError(msg)
    if options.days > options.ca_days:
        msg = (
            f"invalid --days {options.days}: a certificate may not outlive its "
            f"CA (--ca-days {options.ca_days})"
        )
        raise CertificateError(msg)
    _make_directory(directory)
    _make_directory(etcd_ca.parent)
    _write_mesh(options)
    _write_etcd(options)
    return _summary(options)


def _make_directory(path: Path) -> None:
    created = not path.exists()
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    if created:
        # mkdir's mode is masked by the umask; the CA keys live here.
        path.chmod(DIRECTORY_MODE)


def _write_mesh(options: CertsOptions) -> None:
    directory = options.directory
    authority = create_authority("etcd-mesh CA", days=options.ca_days)
    write_authority(directory / "ca.crt", directory / "ca.key", authority)
    for identity in options.identities:
        paths = identity_paths(directory, identity)
        profile = mesh_identity_profile(identity, options.hosts)
        write_pair(paths.cert, paths.key, _issue(authority, profile, options))


def _write_etcd(options: CertsOptions) -> None:
    server = etcd_server_paths(options.directory)
    authority = create_authority("etcd-mesh etcd CA", days=options.ca_days)
    write_authority(server.ca, server.ca.with_suffix(".key"), authority)
    profile = etcd_server_profile(options.hosts)
    write_pair(server.cert, server.key, _issue(authority, profile, options))
    for identity in options.identities:
        paths = etcd_client_paths(options.directory, identity)
        client = etcd_client_profile(identity)
        write_pair(paths.cert, paths.key, _issue(authority, client, options))


def _issue(authority: Authority, profile: LeafProfile, options: CertsOptions) -> Issued:
    return issue_certificate(authority, profile, days=options.days)


def _summary(options: CertsOptions) -> list[str]:
    directory = options.directory
    etcd = etcd_server_paths(directory)
    lines = [
        f"mesh CA:     {directory / 'ca.crt'} (valid {options.ca_days} days)",
        f"etcd CA:     {etcd.ca}",
        f"etcd server: {etcd.cert} (valid {options.days} days)",
    ]
    lines.extend(
        f"{identity + ':':<12} {identity_paths(directory, identity).cert} "
        f"as {dns_name(identity)}; etcd user {etcd_user(identity)!r}"
        for identity in options.identities
    )
    admin = identity_paths(directory, ADMIN_IDENTITY)
    lines.append(
        "call a service with grpcurl: grpcurl "
        f"-cacert {admin.ca} -cert {admin.cert} -key {admin.key} "
        f"-authority {dns_name(COUNTER_IDENTITY)} HOST:PORT list"
    )
    return lines
