"""etcd with TLS, client certificates and auth: each identity has its rights."""

from __future__ import annotations

import stat

import pytest

from registry.cert_authority import (
    etcd_client_profile,
    issue_certificate,
    load_authority,
    write_pair,
)
from registry.certs import ADMIN_IDENTITY, COUNTER_IDENTITY, FRONT_IDENTITY
from registry.errors import EtcdPermissionError, EtcdUnavailableError
from registry.etcd import EtcdClient
from tests.security.secure_mesh import NAMESPACE, SecureMesh

pytestmark = pytest.mark.integration

COUNTER_KEY = f"{NAMESPACE}/services/mesh.counter.v1.CounterService/x"
USER_KEY = f"{NAMESPACE}/services/mesh.user.v1.UserService/x"
USER_DATA = f"{NAMESPACE}/data/user/users/mallory"


async def test_counter_identity_writes_its_prefixes(secure_mesh: SecureMesh):
    async with EtcdClient(secure_mesh.config(COUNTER_IDENTITY)) as etcd:
        await etcd.put(COUNTER_KEY, b"1")
        await etcd.put(f"{NAMESPACE}/data/counter/values/a", b"1")
        kvs, _ = await etcd.get_prefix(f"{NAMESPACE}/services/")

        assert etcd.logins == 1
    assert [kv.key for kv in kvs] == [COUNTER_KEY]


@pytest.mark.parametrize("key", [USER_KEY, USER_DATA])
async def test_counter_identity_denied_user_prefix(secure_mesh: SecureMesh, key):
    async with EtcdClient(secure_mesh.config(COUNTER_IDENTITY)) as etcd:
        with pytest.raises(EtcdPermissionError) as caught:
            await etcd.put(key, b"stolen")

    assert "PERMISSION_DENIED" in str(caught.value) or "permission denied" in str(
        caught.value
    )


async def test_counter_identity_cannot_read_user_data(secure_mesh: SecureMesh):
    async with EtcdClient(secure_mesh.config(COUNTER_IDENTITY)) as etcd:
        with pytest.raises(EtcdPermissionError):
            await etcd.get_prefix(f"{NAMESPACE}/data/user/")


async def test_front_identity_only_reads(secure_mesh: SecureMesh):
    async with EtcdClient(secure_mesh.config(FRONT_IDENTITY)) as etcd:
        await etcd.get_prefix(f"{NAMESPACE}/services/")
        with pytest.raises(EtcdPermissionError):
            await etcd.put(COUNTER_KEY, b"1")


async def test_client_without_certificate_refused(secure_mesh: SecureMesh):
    config = secure_mesh.config(None)
    etcd = EtcdClient(config, timeout=2.0)
    await etcd.open()
    try:
        with pytest.raises(EtcdUnavailableError):
            await etcd.get_prefix(f"{NAMESPACE}/")
        with pytest.raises(EtcdUnavailableError):
            await etcd.put(f"{NAMESPACE}/data/counter/values/a", b"1")
    finally:
        await etcd.close()


async def test_unknown_user_login_refused(secure_mesh: SecureMesh):
    config = secure_mesh.replace_security(
        secure_mesh.config(COUNTER_IDENTITY),
        user="nobody",
        password="wrong-password-456",
        password_file=None,
    )
    etcd = EtcdClient(config, timeout=2.0)
    with pytest.raises(EtcdPermissionError) as caught:
        await etcd.open()

    assert "wrong-password-456" not in str(caught.value)


async def test_certificate_of_no_user_reads_nothing(secure_mesh: SecureMesh):
    # A valid etcd client certificate whose common name is no etcd user, and
    # no login: etcd identifies the client but grants that
    # user no rights.
    authority = load_authority(
        secure_mesh.certs / "etcd" / "ca.crt", secure_mesh.certs / "etcd" / "ca.key"
    )
    issued = issue_certificate(authority, etcd_client_profile("nobody"), days=1)
    cert, key = secure_mesh.root / "nobody.crt", secure_mesh.root / "nobody.key"
    write_pair(cert, key, issued)
    config = secure_mesh.replace_security(secure_mesh.config(None), cert=cert, key=key)
    async with EtcdClient(config, timeout=2.0) as etcd:
        with pytest.raises(EtcdPermissionError):
            await etcd.get_prefix(f"{NAMESPACE}/")
        with pytest.raises(EtcdPermissionError):
            await etcd.put(f"{NAMESPACE}/data/counter/values/a", b"1")


async def test_wrong_password_not_shown(secure_mesh: SecureMesh):
    config = secure_mesh.replace_security(
        secure_mesh.config(COUNTER_IDENTITY),
        password="not-the-password-123",
        password_file=None,
    )
    etcd = EtcdClient(config, timeout=2.0)
    with pytest.raises(EtcdPermissionError) as caught:
        await etcd.open()

    assert "not-the-password-123" not in str(caught.value)
    assert "counter-svc" in str(caught.value)


async def test_admin_has_every_right(secure_mesh: SecureMesh):
    async with EtcdClient(secure_mesh.config(ADMIN_IDENTITY)) as etcd:
        await etcd.put(USER_KEY, b"1")
        await etcd.put(COUNTER_KEY, b"1")

        assert await etcd.auth_enabled()


def test_password_files_private(secure_mesh: SecureMesh):
    files = sorted(secure_mesh.auth.glob("*.password"))
    names = [path.stem for path in files]

    assert names == ["counter-svc", "front", "ingress", "root", "user-svc"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(secure_mesh.auth.stat().st_mode) == 0o700
