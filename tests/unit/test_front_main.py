"""`python -m front` rejects bad flags and settings with one line and status 2."""

from __future__ import annotations

import pytest

from front.__main__ import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--port", "70000"], "invalid --port 70000"),
        (["--call-timeout", "0"], "invalid --call-timeout 0.0"),
        (["--namespace", "no slash"], "MESH_NAMESPACE: invalid namespace"),
        (["--etcd-endpoints", "ftp://x:1"], "MESH_ETCD_ENDPOINTS: unsupported scheme"),
        (["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (
            ["--tls-cert", "/no/c.pem", "--tls-key", "/no/k.pem"],
            "invalid --tls-cert '/no/c.pem': no such file",
        ),
    ],
)
def test_bad_setting_exits_2(capsys, argv, expected):
    status = main(argv)

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"front: {expected}")
    assert err.count("\n") == 1


def test_unreadable_tls_pair_exits_2(capsys, tmp_path):
    cert = tmp_path / "front.crt"
    key = tmp_path / "front.key"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")

    status = main(["--tls-cert", str(cert), "--tls-key", str(key)])

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"front: invalid --tls-cert '{cert}' or --tls-key '{key}'")
    assert err.count("\n") == 1
