"""Serve gRPC services in the mesh: health, reflection, registration, drain.

    MeshServer(specs, config, etcd=etcd).start()

starts a grpc.aio server with the given services plus `grpc.health.v1` and
server reflection, and registers every service under one lease. `stop()`
drains in this order: health goes to NOT_SERVING, the registration keys are
deleted, in-flight calls get a grace period, then the server stops.

With MESH_TLS_CERT, MESH_TLS_KEY and MESH_TLS_CA set (registry.mesh_tls), the
server requires a client certificate from the mesh CA, reloads its own
certificate when the files change, and authorizes each call by the caller's
identity (registry.authz).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from registry.authz import AuthorizationInterceptor, Policy
from registry.config import (
    MeshConfig,
    detect_advertise_host,
    format_address,
)
from registry.errors import MeshError
from registry.etcd import EtcdClient
from registry.interceptors import InstanceTrailerInterceptor
from registry.mesh_tls import server_credentials
from registry.model import InstanceInfo
from registry.reflection import reflection_pool
from registry.registration import Registration

logger = logging.getLogger(__name__)

try:
    PACKAGE_VERSION = version("etcd-mesh")
except PackageNotFoundError:  # running from a source tree that is not installed
    PACKAGE_VERSION = "0.0.0"


@dataclass(frozen=True)
class ServiceSpec:
    """A gRPC service to serve: its full proto name and how to add it."""

    name: str
    add_to_server: Callable[[grpc.aio.Server], None]


def new_instance_id() -> str:
    """Return an id that is unique per process and readable in listings."""
    host = socket.gethostname().split(".", 1)[0] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class MeshServer:
    """A grpc.aio server that registers itself in etcd while it runs."""

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        config: MeshConfig,
        *,
        etcd: EtcdClient,
        port: int = 0,
        bind_host: str = "0.0.0.0",
        version: str = PACKAGE_VERSION,
        zone: str = "local",
        weight: int = 100,
        grace: float = 5.0,
        drain_delay: float = 1.0,
        policy: Policy | None = None,
    ) -> None:
        if not specs:
            raise ValueError("specs: serve at least one service")
        self.specs = tuple(specs)
        self.config = config
        self.instance_id = new_instance_id()
        self.port = port
        self.address = ""
        # grpc-stubs does not declare the asyncio servicer of grpcio-health-checking.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._etcd = etcd
        self._bind_host = bind_host
        self._info = InstanceInfo(self.instance_id, version, zone, weight)
        self._grace = grace
        self._drain_delay = drain_delay
        interceptors: list[grpc.aio.ServerInterceptor] = [  # type: ignore[type-arg]
            InstanceTrailerInterceptor(self.instance_id)
        ]
        self.policy: Policy | None = None
        if config.tls is not None:
            # Only mTLS gives the server a caller identity to authorize.
            self.policy = policy or Policy.from_env(os.environ)
            interceptors.insert(0, AuthorizationInterceptor(self.policy))
        self._server = grpc.aio.server(interceptors=interceptors)
        self.registration: Registration | None = None

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    async def start(self) -> None:
        """Bind, start serving, report SERVING and register in etcd."""
        host = self.config.advertise_host or detect_advertise_host(
            self.config.etcd_endpoints
        )

        for spec in self.specs:
            spec.add_to_server(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self._server,
            pool=reflection_pool(),
        )

        target = f"{self._bind_host}:{self.port}"
        try:
            bound = self._bind(target)
        except RuntimeError as exc:  # grpcio 1.85 raises where older ones returned 0
            bound = 0
            logger.debug("binding %s failed: %s", target, exc)
        if bound == 0:
            msg = f"port: cannot bind {target}; it is taken or not local, so choose a free port"
            raise MeshError(msg)
        self.port = bound
        # A server bound to port 0 registers the port it actually got.
        self.address = format_address(host, bound)

        await self._server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

        self.registration = Registration(
            self._etcd,
            self.config,
            services=self.service_names,
            address=self.address,
            info=self._info,
        )
        await self.registration.start()

    def _bind(self, target: str) -> int:
        if self.config.tls is None:
            return self._server.add_insecure_port(target)
        return self._server.add_secure_port(target, server_credentials(self.config.tls))

    async def stop(self) -> None:
        """Drain: NOT_SERVING, deregister, let calls finish, stop.

        Between deregistering and stopping, the server keeps accepting calls
        for `drain_delay` seconds, so that clients that have not yet seen the
        removal still get replies instead of errors.
        """
        await self.health.enter_graceful_shutdown()
        if self.registration is not None:
            await self.registration.stop()
        await asyncio.sleep(self._drain_delay)
        await self._server.stop(self._grace)
        logger.info("stopped %s", self.instance_id)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags that every mesh service shares; MESH_* are the defaults."""
    env = os.environ
    parser.add_argument(
        "--port",
        type=int,
        default=int(env.get("MESH_PORT", "0")),
        help="TCP port to listen on; 0 picks a free port (env MESH_PORT)",
    )
    parser.add_argument(
        "--bind-host",
        default=env.get("MESH_BIND_HOST", "0.0.0.0"),
        help="address to listen on (env MESH_BIND_HOST, default 0.0.0.0)",
    )
    parser.add_argument(
        "--etcd-endpoints",
        help="comma-separated etcd URLs (env MESH_ETCD_ENDPOINTS)",
    )
    parser.add_argument("--namespace", help="key prefix in etcd (env MESH_NAMESPACE)")
    parser.add_argument(
        "--lease-ttl", help="registration lease TTL in seconds (env MESH_LEASE_TTL)"
    )
    parser.add_argument(
        "--advertise-host",
        help="host that clients dial (env MESH_ADVERTISE_HOST; "
        "default: the local address that routes to etcd)",
    )
    parser.add_argument(
        "--zone",
        default=env.get("MESH_ZONE", "local"),
        help="zone stored in the registration (env MESH_ZONE)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=float(env.get("MESH_GRACE", "5")),
        help="seconds that in-flight calls get on shutdown (env MESH_GRACE)",
    )
    parser.add_argument(
        "--drain-delay",
        type=float,
        default=float(env.get("MESH_DRAIN_DELAY", "1")),
        help="seconds between deregistering and refusing new calls on shutdown "
        "(env MESH_DRAIN_DELAY)",
    )
    parser.add_argument(
        "--log-level",
        default=env.get("MESH_LOG_LEVEL", "INFO"),
        help="logging level (env MESH_LOG_LEVEL)",
    )


def config_from_arguments(args: argparse.Namespace) -> MeshConfig:
    return MeshConfig.from_env(
        etcd_endpoints=args.etcd_endpoints,
        namespace=args.namespace,
        lease_ttl=args.lease_ttl,
        advertise_host=args.advertise_host,
    )


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def run_service(
    prog: str,
    build: Callable[[EtcdClient], Sequence[ServiceSpec]],
    argv: Sequence[str] | None = None,
    *,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> int:
    """Run a service process until SIGTERM or SIGINT; return the exit status.

    `parents` add a service's own flags, so that --help lists them too.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=f"Run {prog} in the mesh.", parents=list(parents)
    )
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = config_from_arguments(args)
        return asyncio.run(_serve(prog, config, build, args))
    except MeshError as exc:
        print(f"{prog}: {exc}", flush=True)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 0


async def _serve(
    prog: str,
    config: MeshConfig,
    build: Callable[[EtcdClient], Sequence[ServiceSpec]],
    args: argparse.Namespace,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with EtcdClient(config) as etcd:
        server = MeshServer(
            build(etcd),
            config,
            etcd=etcd,
            port=args.port,
            bind_host=args.bind_host,
            zone=args.zone,
            grace=args.grace,
            drain_delay=args.drain_delay,
        )
        await server.start()
        print(  # noqa: T201
            f"{prog}: serving {', '.join(server.service_names)} at {server.address} "
            f"as {server.instance_id}",
            flush=True,
        )
        await stop.wait()
        logger.info("%s: shutting down %s", prog, server.instance_id)
        await server.stop()
    return 0
