"""The embedded etcd of `meshctl up` and `meshctl etcd`, and the .mesh folder."""

from __future__ import annotations

import asyncio
import ipaddress
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from registry.cli_common import echo, run_until_signal, until_stopped, warn
from registry.config import resolve_host
from registry.errors import ConfigError, EtcdUnavailableError
from registry.etcd_process import EtcdProcess, EtcdStartError, port_is_open

if TYPE_CHECKING:
    from registry.config import EtcdEndpoint, MeshConfig

# Folder, under the current directory, for the embedded etcd's data and the
# logs of the processes that `meshctl up` starts.
STATE_DIR_NAME = ".mesh"


def state_dir() -> Path:
    """Return ./.mesh, or a new temporary folder when it cannot be created."""
    path = Path.cwd() / STATE_DIR_NAME
    try:
        path.mkdir(exist_ok=True)
        probe = path / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError:
        return Path(tempfile.mkdtemp(prefix="meshctl-"))
    return path


def is_local_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def etcd_answers(config: MeshConfig) -> bool:
    """True when at least one etcd endpoint accepts TCP connections."""
    for endpoint in config.etcd_endpoints:
        try:
            host = resolve_host(endpoint.host)
        except ConfigError:
            continue
        if port_is_open(host, endpoint.port):
            return True
    return False


def embedded_etcd_for(config: MeshConfig, state: Path) -> EtcdProcess:
    """Return an etcd to start at the first endpoint, which must be local.

    Raises EtcdUnavailableError when the endpoint is not local, and
    EtcdStartError when meshctl cannot serve that endpoint itself.
    """
    endpoint: EtcdEndpoint = config.etcd_endpoints[0]
    if not is_local_host(endpoint.host):
        raise EtcdUnavailableError(
            config.endpoint_urls,
            "nothing accepts connections there, and meshctl starts an embedded "
            "etcd only for a local address (127.0.0.0/8, localhost or ::1); "
            "start etcd there or point MESH_ETCD_ENDPOINTS at a running one",
        )
    host = resolve_host(endpoint.host)
    if endpoint.secure or ":" in host:
        # NOTE: EtcdProcess serves plain http on IPv4 only.
        msg = (
            f"nothing answers at {endpoint.url}, and meshctl can start an "
            "embedded etcd only at an http:// IPv4 address such as "
            "http://127.0.0.1:2379; start etcd there yourself"
        )
        raise EtcdStartError(msg)
    return EtcdProcess(
        data_dir=state / "etcd",
        host=host,
        client_port=endpoint.port,
        log_path=state / "etcd.log",
    )


async def run_etcd(port: int, data_dir: Path) -> int:
    """Run an etcd on 127.0.0.1:port in the foreground until SIGINT or SIGTERM.

    Returns 0 after a signal, and 1 when etcd exits on its own.
    """
    log_path = data_dir.with_suffix(".log")
    server = EtcdProcess(data_dir=data_dir, client_port=port, log_path=log_path)

    async def serve(stop: asyncio.Event) -> int:
        await asyncio.to_thread(server.start)
        assert server.process is not None
        echo(
            f"etcd is running at {server.client_url} with data in {data_dir} "
            f"and its log in {log_path}; press Ctrl-C to stop"
        )
        try:
            returncode = await until_stopped(
                asyncio.to_thread(server.process.wait), stop
            )
        finally:
            await asyncio.to_thread(server.stop)
        if returncode is not None:
            warn(f"etcd exited with status {returncode}; see {log_path}")
            return 1
        echo("etcd stopped")
        return 0

    return await run_until_signal(serve)
