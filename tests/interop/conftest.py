"""Build the Go interop program from Debian's Go packages, once per session.

The program (go/meshinterop) imports etcd's own naming packages from
golang-etcd-server-dev and grpc-go from golang-google-grpc-dev. It is built
offline in GOPATH mode against /usr/share/gocode, and the binary is cached
in pytest's cache directory under a hash of the source, the Go version and
the Debian package versions.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

GO_SOURCE = Path(__file__).parent / "go" / "meshinterop"
GOCODE = Path("/usr/share/gocode")
PACKAGES = ("golang-go", "golang-google-grpc-dev", "golang-etcd-server-dev")
# One file that each Debian package installs and the program needs.
PACKAGE_FILES = {
    "golang-go": Path("/usr/bin/go"),
    "golang-google-grpc-dev": GOCODE
    / "src/google.golang.org/grpc/health/grpc_health_v1/health.pb.go",
    "golang-etcd-server-dev": GOCODE
    / "src/go.etcd.io/etcd/clientv3/naming/resolver/resolver.go",
}
# Set this variable to 1 where the interop test must run, such as CI as root.
# A missing package then fails the interop tests instead of skipping them.
REQUIRED_VARIABLE = "MESH_INTEROP_REQUIRED"
BUILD_TIMEOUT = 180.0


@dataclass(frozen=True)
class GoProgram:
    """The built meshinterop binary."""

    path: Path

    async def run(
        self, *args: str, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run one meshinterop command and return its exit status and output."""
        process = await asyncio.create_subprocess_exec(
            str(self.path),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return subprocess.CompletedProcess(
            [str(self.path), *args],
            process.returncode,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
        )


def missing_packages() -> list[str]:
    return [name for name in PACKAGES if not PACKAGE_FILES[name].exists()]


def skip_or_fail(reason: str) -> None:
    if os.environ.get(REQUIRED_VARIABLE) == "1":
        pytest.fail(f"{reason} ({REQUIRED_VARIABLE}=1 requires the interop test)")
    pytest.skip(reason)


def check_packages() -> None:
    missing = missing_packages()
    if not missing:
        return
    names = " ".join(missing)
    if os.geteuid() != 0:
        skip_or_fail(
            f"Debian packages {names} are missing, and apt-get cannot install "
            "them without root; run `sudo make interop-deps`"
        )
    skip_or_fail(
        f"Debian packages {names} are missing; run `make interop-deps` as root"
    )


def build_key() -> str:
    """Hash everything that changes the binary: source, Go and packages."""
    digest = hashlib.sha256()
    for source in sorted(GO_SOURCE.rglob("*.go")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    for command in (
        [str(PACKAGE_FILES["golang-go"]), "version"],
        ["dpkg-query", "--show", *PACKAGES],
    ):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        digest.update(result.stdout.encode())
    return digest.hexdigest()[:16]


def build(work_dir: Path, output: Path) -> None:
    """Compile the program offline, failing the test with the compiler output."""
    gopath = work_dir / "gopath"
    package_dir = gopath / "src" / "meshinterop"
    shutil.copytree(GO_SOURCE, package_dir)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work_dir),
        # GOPATH mode: imports resolve in the temporary GOPATH, then in Debian's tree.
        "GO111MODULE": "off",
        "GOPATH": f"{gopath}:{GOCODE}",
        "GOCACHE": str(work_dir / "gocache"),
        "GOPROXY": "off",
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    result = subprocess.run(
        [str(PACKAGE_FILES["golang-go"]), "build", "-o", str(output), "."],
        cwd=package_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"go build of {GO_SOURCE} failed with status {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )


@pytest.fixture(scope="session")
def go_program(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> GoProgram:
    """The meshinterop binary, built on first use or taken from the cache."""
    check_packages()
    key = build_key()
    cache = getattr(pytestconfig, "cache", None)
    if cache is None:
        cache_dir = tmp_path_factory.mktemp("interop-bin")
    else:
        cache_dir = cache.mkdir(f"interop-go-{key}")
    binary = cache_dir / "meshinterop"
    if binary.exists():
        return GoProgram(binary)

    work_dir = tmp_path_factory.mktemp("interop-build")
    built = work_dir / "meshinterop"
    build(work_dir, built)
    # A rename is atomic, so a parallel session never runs a half-copied file.
    staged = cache_dir / f"meshinterop.{os.getpid()}"
    shutil.copy2(built, staged)
    staged.replace(binary)
    if cache is not None:
        remove_stale_builds(cache_dir)
    return GoProgram(binary)


def remove_stale_builds(current: Path) -> None:
    """Delete binaries cached for other sources or package versions (~15 MB each)."""
    for stale in current.parent.glob("interop-go-*"):
        if stale != current:
            shutil.rmtree(stale, ignore_errors=True)
