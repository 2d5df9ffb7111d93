"""Fixtures of the security tests: a mesh with TLS, client certificates and auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.security.secure_mesh import SecureMesh


@pytest.fixture
async def secure_mesh(tmp_path: Path) -> AsyncIterator[SecureMesh]:
    """Certificates, password files and a secured etcd, stopped after the test."""
    mesh = SecureMesh(tmp_path)
    await mesh.start()
    yield mesh
    mesh.stop()
