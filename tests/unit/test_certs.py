"""`meshctl certs init` and the identity helpers of registry.certs."""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from registry.cert_authority import (
    host_name,
    issue_certificate,
    load_authority,
    mesh_identity_profile,
    write_pair,
)
from registry.certs import (
    DEFAULT_IDENTITIES,
    CertificateError,
    PeerIdentity,
    etcd_client_paths,
    etcd_server_paths,
    identity_paths,
    peer_identity,
    service_dns_name,
    service_identity,
)
from registry.cli import main
from registry.cli_certs import CertsOptions, init_certs

SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs") / "mesh"
    init_certs(CertsOptions(directory, hosts=("etcd-1", "10.0.0.7")))
    return directory


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def extension(cert: x509.Certificate, kind):
    return cert.extensions.get_extension_for_class(kind).value


def dns_names(cert: x509.Certificate) -> list[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return names.value.get_values_for_type(x509.DNSName)


def uris(cert: x509.Certificate) -> list[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return names.value.get_values_for_type(x509.UniformResourceIdentifier)


def ips(cert: x509.Certificate) -> list[str]:
    names = extension(cert, x509.SubjectAlternativeName)
    return [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_service_dns_name_known_services():
    assert service_dns_name("mesh.counter.v1.CounterService") == (
        "counter-svc.mesh.local"
    )
    assert service_dns_name("mesh.user.v1.UserService") == "user-svc.mesh.local"


def test_service_identity_derives_unknown_names():
    assert service_identity("shop.v1.OrderHistoryService") == "order-history-svc"
    assert service_identity("shop.v1.Cart") == "cart-svc"
    assert service_identity("shop.v1.HTTPGateway") == "http-gateway-svc"


def test_service_identity_rejects_empty_name():
    with pytest.raises(CertificateError, match="invalid service name"):
        service_identity("shop.v1.Service")


def test_identity_paths_layout(tmp_path):
    cert, key, ca = identity_paths(tmp_path, "counter-svc")
    etcd_cert, etcd_key, etcd_ca = etcd_client_paths(tmp_path, "counter-svc")

    assert cert == tmp_path / "counter-svc.crt"
    assert key == tmp_path / "counter-svc.key"
    assert ca == tmp_path / "ca.crt"
    assert etcd_cert == tmp_path / "etcd" / "counter-svc.crt"
    assert etcd_key == tmp_path / "etcd" / "counter-svc.key"
    assert etcd_ca == tmp_path / "etcd" / "ca.crt"


@pytest.mark.parametrize("name", ["", "Counter", "a/b", "../x", "-x", "a" * 64])
def test_identity_paths_reject_bad_names(tmp_path, name):
    with pytest.raises(CertificateError, match="invalid identity name"):
        identity_paths(tmp_path, name)


@pytest.mark.parametrize("identity", DEFAULT_IDENTITIES)
def test_identity_certificate_chains_to_mesh_ca(certs, identity):
    paths = identity_paths(certs, identity)
    ca = load(paths.ca)
    cert = load(paths.cert)

    cert.verify_directly_issued_by(ca)
    assert cert.issuer == ca.subject
    assert common_name(cert) == identity
    assert f"{identity}.mesh.local" in dns_names(cert)
    assert uris(cert) == [f"spiffe://mesh.local/{identity}"]


@pytest.mark.parametrize("identity", DEFAULT_IDENTITIES)
def test_key_matches_certificate(certs, identity):
    paths = identity_paths(certs, identity)
    key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)

    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert key.public_key() == load(paths.cert).public_key()


def test_every_key_file_is_private(certs):
    keys = sorted(certs.rglob("*.key"))

    # The mesh CA and each identity, then the etcd CA, etcd's server and
    # each identity's etcd client.
    assert len(keys) == 1 + len(DEFAULT_IDENTITIES) + 2 + len(DEFAULT_IDENTITIES)
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700


def test_no_temporary_files_left(certs):
    assert [path for path in certs.rglob(".*") if path.is_file()] == []


@pytest.mark.parametrize(
    ("identity", "usages"),
    [
        ("counter-svc", [SERVER, CLIENT]),
        ("user-svc", [SERVER, CLIENT]),
        ("front", [SERVER, CLIENT]),
        ("ingress", [SERVER, CLIENT]),
        ("meshctl", [CLIENT]),
    ],
)
def test_extended_key_usage(certs, identity, usages):
    cert = load(identity_paths(certs, identity).cert)

    assert list(extension(cert, x509.ExtendedKeyUsage)) == usages


def test_leaf_key_usage_and_constraints(certs):
    cert = load(identity_paths(certs, "counter-svc").cert)
    usage = extension(cert, x509.KeyUsage)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)

    assert usage.digital_signature
    assert not usage.key_cert_sign
    assert constraints.critical
    assert not constraints.value.ca


def test_ca_constraints(certs):
    ca = load(certs / "ca.crt")
    usage = extension(ca, x509.KeyUsage)

    assert extension(ca, x509.BasicConstraints).ca
    assert extension(ca, x509.BasicConstraints).path_length == 0
    assert usage.key_cert_sign
    assert not usage.digital_signature


def test_default_validity(certs):
    ca = load(certs / "ca.crt")
    leaf = load(identity_paths(certs, "front").cert)

    ca_days = (ca.not_valid_after_utc - ca.not_valid_before_utc).days
    leaf_days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    assert ca_days == 365
    assert leaf_days == 90
    assert leaf.not_valid_before_utc < dt.datetime.now(dt.UTC)


def test_edge_identities_carry_loopback_and_hosts(certs):
    front = load(identity_paths(certs, "front").cert)
    service = load(identity_paths(certs, "counter-svc").cert)

    assert dns_names(front) == ["front.mesh.local", "localhost", "etcd-1"]
    assert ips(front) == ["127.0.0.1", "::1", "10.0.0.7"]
    assert dns_names(service) == ["counter-svc.mesh.local"]
    assert ips(service) == []


def test_etcd_server_certificate(certs):
    paths = etcd_server_paths(certs)
    cert = load(paths.cert)

    cert.verify_directly_issued_by(load(paths.ca))
    assert dns_names(cert) == ["localhost", "etcd-1"]
    assert ips(cert) == ["127.0.0.1", "::1", "10.0.0.7"]
    assert list(extension(cert, x509.ExtendedKeyUsage)) == [SERVER]


@pytest.mark.parametrize(
    ("identity", "user"),
    [("counter-svc", "counter-svc"), ("user-svc", "user-svc"), ("meshctl", "root")],
)
def test_etcd_client_certificate_names_the_user(certs, identity, user):
    paths = etcd_client_paths(certs, identity)
    cert = load(paths.cert)

    cert.verify_directly_issued_by(load(paths.ca))
    assert common_name(cert) == user
    assert list(extension(cert, x509.ExtendedKeyUsage)) == [CLIENT]


def test_etcd_ca_is_not_the_mesh_ca(certs):
    mesh = load(certs / "ca.crt")
    etcd = load(etcd_server_paths(certs).ca)

    assert mesh.public_key() != etcd.public_key()
    with pytest.raises(ValueError):
        load(identity_paths(certs, "front").cert).verify_directly_issued_by(etcd)


def test_init_refuses_existing_ca(tmp_path, capsys):
    directory = tmp_path / "certs"
    first = main(["certs", "init", "--dir", str(directory)])
    before = (directory / "ca.crt").read_bytes()
    capsys.readouterr()

    second = main(["certs", "init", "--dir", str(directory)])

    err = capsys.readouterr().err
    assert first == 0
    assert second == 2
    assert err.startswith(f"meshctl: {directory} already has a CA")
    assert "--force" in err
    assert err.count("\n") == 1
    assert (directory / "ca.crt").read_bytes() == before


def test_init_force_replaces_ca(tmp_path, capsys):
    directory = tmp_path / "certs"
    main(["certs", "init", "--dir", str(directory)])
    before = (directory / "ca.crt").read_bytes()

    status = main(["certs", "init", "--dir", str(directory), "--force"])

    assert status == 0
    assert (directory / "ca.crt").read_bytes() != before
    load(identity_paths(directory, "front").cert).verify_directly_issued_by(
        load(directory / "ca.crt")
    )


def test_init_sets_validity_and_extra_identity(tmp_path, capsys):
    directory = tmp_path / "certs"

    status = main(
        [
            "certs",
            "init",
            "--dir",
            str(directory),
            "--days",
            "7",
            "--ca-days",
            "30",
            "--identity",
            "order-history-svc",
        ]
    )

    out = capsys.readouterr().out
    leaf = load(identity_paths(directory, "order-history-svc").cert)
    ca = load(directory / "ca.crt")
    assert status == 0
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 7
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 30
    assert "order-history-svc.mesh.local" in dns_names(leaf)
    assert etcd_client_paths(directory, "order-history-svc").cert.exists()
    assert "-authority counter-svc.mesh.local" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--days", "400"], "invalid --days 400: a certificate may not outlive"),
        (["--identity", "Bad_Name"], "invalid identity name 'Bad_Name'"),
        (["--host", "a b"], "invalid host name 'a b'"),
    ],
)
def test_init_rejects_bad_options(tmp_path, capsys, argv, expected):
    status = main(["certs", "init", "--dir", str(tmp_path / "c"), *argv])

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"meshctl: {expected}")
    assert err.count("\n") == 1


def test_init_rejects_zero_days(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["certs", "init", "--dir", str(tmp_path), "--days", "0"])

    assert exit_info.value.code == 2
    assert "invalid number of days '0'" in capsys.readouterr().err


def test_host_name_parses_addresses():
    assert isinstance(host_name("127.0.0.1"), x509.IPAddress)
    assert isinstance(host_name("::1"), x509.IPAddress)
    assert host_name("Etcd-1.") == x509.DNSName("etcd-1")


def test_peer_identity_from_auth_context():
    context = {
        "transport_security_type": [b"ssl"],
        "x509_common_name": [b"front"],
        "x509_subject_alternative_name": [
            b"front.mesh.local",
            b"spiffe://mesh.local/front",
            b"127.0.0.1",
        ],
        "peer_dns": [b"front.mesh.local", b"localhost"],
        "peer_uri": [b"spiffe://mesh.local/front"],
        "peer_ip": [b"127.0.0.1"],
    }

    peer = peer_identity(context)

    assert peer is not None
    assert peer.name == "front"
    assert peer.spiffe_id == "spiffe://mesh.local/front"
    assert peer.dns_names == ("front.mesh.local", "localhost")
    assert peer.common_name == "front"


def test_peer_identity_without_certificate():
    assert peer_identity({}) is None
    assert peer_identity({"transport_security_type": [b"insecure"]}) is None


def test_peer_name_falls_back_to_dns_name():
    peer = PeerIdentity(dns_names=("user-svc.mesh.local",), uris=(), common_name=None)
    foreign = PeerIdentity(
        dns_names=("example.org",), uris=("spiffe://other/x",), common_name="x"
    )

    assert peer.name == "user-svc"
    assert foreign.name is None
    assert str(foreign) == "spiffe://other/x, example.org"


def test_loaded_ca_issues_new_certificates(certs, tmp_path):
    authority = load_authority(certs / "ca.crt", certs / "ca.key")
    issued = issue_certificate(authority, mesh_identity_profile("user-svc"), days=1)
    paths = identity_paths(tmp_path, "user-svc")

    write_pair(paths.cert, paths.key, issued)

    renewed = load(paths.cert)
    renewed.verify_directly_issued_by(load(certs / "ca.crt"))
    assert dns_names(renewed) == ["user-svc.mesh.local"]
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600


def test_load_authority_names_bad_file(tmp_path):
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    (tmp_path / "ca.key").write_text("not a key\n")

    with pytest.raises(CertificateError, match="cannot read the CA from"):
        load_authority(tmp_path / "ca.crt", tmp_path / "ca.key")


def test_certificate_may_not_outlive_ca(certs):
    authority = load_authority(certs / "ca.crt", certs / "ca.key")

    with pytest.raises(CertificateError, match="would outlive the CA"):
        issue_certificate(authority, mesh_identity_profile("front"), days=400)
