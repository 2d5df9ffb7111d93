"""`meshctl auth init`: etcd users and roles for the mesh, then etcd auth on.

    meshctl auth init [--dir DIR]

It creates these etcd users, each with a new random password written to
`DIR/<user>.password` (mode 0600, default DIR .mesh/auth). No password is
printed or logged.

| user        | role rights                                                   |
|-------------|---------------------------------------------------------------|
| root        | everything; the admin identity that meshctl uses              |
| counter-svc | read `<ns>/services/`; read and write                         |
|             | `<ns>/services/mesh.counter.v1.CounterService/` and           |
|             | `<ns>/data/counter/`                                          |
| user-svc    | the same for `mesh.user.v1.UserService` and `<ns>/data/user/` |
| front       | read `<ns>/services/`                                         |
| ingress     | read `<ns>/services/`                                         |

etcd enables auth only once `root` exists with the `root` role. The user
names are those in the common name of the etcd client certificates that
`meshctl certs init` writes, so that etcd's client-certificate login and the
password login give the same rights. Run on an etcd whose auth is already on,
the command logs in with the admin certificate (common name `root`), sets
new passwords and adds missing grants.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
from pathlib import Path

from registry.certs import (
    COUNTER_IDENTITY,
    ETCD_ROOT_USER,
    FRONT_IDENTITY,
    INGRESS_IDENTITY,
    USER_IDENTITY,
    etcd_user,
)
from registry.cli_common import echo
from registry.config import MeshConfig
from registry.etcd import EtcdClient

DEFAULT_AUTH_DIR = Path(".mesh/auth")
DIRECTORY_MODE = 0o700
PASSWORD_FILE_MODE = 0o600
PASSWORD_BYTES = 24


@dataclasses.dataclass(frozen=True)
class ServiceGrant:
    """The etcd rights of one service identity."""

    identity: str
    service: str | None
    data: str | None


# The front and the ingress only discover services, so they only read.
GRANTS = (
    ServiceGrant(COUNTER_IDENTITY, "mesh.counter.v1.CounterService", "counter"),
    ServiceGrant(USER_IDENTITY, "mesh.user.v1.UserService", "user"),
    ServiceGrant(FRONT_IDENTITY, None, None),
    ServiceGrant(INGRESS_IDENTITY, None, None),
)


def add_auth_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    auth = commands.add_parser("auth", help="set up etcd users, roles and auth")
    actions = auth.add_subparsers(dest="auth_command", required=True, metavar="ACTION")
    init = actions.add_parser(
        "init",
        help="create the etcd users and roles of the mesh and enable etcd auth",
        description="Create root, one user and role per service, write their "
        "passwords to files with mode 0600, then enable etcd auth.",
    )
    init.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_AUTH_DIR,
        help=f"folder of the password files (default: {DEFAULT_AUTH_DIR})",
    )


async def run_auth(config: MeshConfig, directory: Path) -> int:
    """Run `meshctl auth init`, print the files it wrote and return 0.

    It never logs in with a password: before auth is on, etcd needs none,
    and afterwards the admin client certificate (common name root) is enough.
    """
    anonymous = dataclasses.replace(
        config.etcd_security, user=None, password=None, password_file=None
    )
    async with EtcdClient(dataclasses.replace(config, etcd_security=anonymous)) as etcd:
        for line in await init_auth(etcd, config.namespace, directory):
            echo(line)
    return 0


def password_path(directory: Path, user: str) -> Path:
    return directory / f"{user}.password"


async def init_auth(etcd: EtcdClient, namespace: str, directory: Path) -> list[str]:
    """Create the users, roles and password files, then enable auth.

    Returns the output lines, which name files and users, never a password.
    """
    _make_directory(directory)
    for grant in GRANTS:
        await _add_service_user(etcd, namespace, grant, directory)
    await etcd.add_role(ETCD_ROOT_USER)
    await _set_user(etcd, ETCD_ROOT_USER, directory)
    await etcd.grant_role(ETCD_ROOT_USER, ETCD_ROOT_USER)
    if not await etcd.auth_enabled():
        await etcd.enable_auth()
    users = (ETCD_ROOT_USER, *(etcd_user(grant.identity) for grant in GRANTS))
    return [
        f"etcd auth is on; passwords are in {directory}",
        *(
            f"{user + ':':<12} MESH_ETCD_USER={user} "
            f"MESH_ETCD_PASSWORD_FILE={password_path(directory, user)}"
            for user in users
        ),
    ]


async def _add_service_user(
    etcd: EtcdClient, namespace: str, grant: ServiceGrant, directory: Path
) -> None:
    user = etcd_user(grant.identity)
    await etcd.add_role(user)
    await etcd.grant_prefix(user, f"{namespace}/services/", "read")
    if grant.service is not None:
        await etcd.grant_prefix(
            user, f"{namespace}/services/{grant.service}/", "readwrite"
        )
    if grant.data is not None:
        await etcd.grant_prefix(user, f"{namespace}/data/{grant.data}/", "readwrite")
    await _set_user(etcd, user, directory)
    await etcd.grant_role(user, user)


async def _set_user(etcd: EtcdClient, user: str, directory: Path) -> None:
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    await etcd.set_user(user, password)
    # Written after etcd accepted it, so a file always contains a working password.
    _write_secret(password_path(directory, user), password)


def _make_directory(path: Path) -> None:
    created = not path.exists()
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    if created:
        # mkdir's mode is masked by the umask.
        path.chmod(DIRECTORY_MODE)


def _write_secret(path: Path, secret: str) -> None:
    """Write secret to path with mode 0600 from the start, replacing it atomically."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PASSWORD_FILE_MODE)
    try:
        os.write(fd, f"{secret}\n".encode())
        os.fchmod(fd, PASSWORD_FILE_MODE)
    finally:
        os.close(fd)
    temporary.replace(path)
