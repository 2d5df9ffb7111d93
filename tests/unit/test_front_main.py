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
    ],
)
def test_bad_setting_exits_2(capsys, argv, expected):
    status = main(argv)

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"front: {expected}")
    assert err.count("\n") == 1
