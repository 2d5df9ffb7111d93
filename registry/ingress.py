"""The gRPC ingress: one stable address for every service in the mesh.

    python -m registry.ingress --port 50051 --bind-host 127.0.0.1
    grpcurl -plaintext localhost:50051 list

Each call is forwarded as raw bytes to a live replica that discovery picks
(registry.ingress_proxy). The ingress serves server reflection for every
service in the mesh in both versions (registry.ingress_reflection), and
grpc.health.v1 for itself (registry.ingress_directory). The ingress is an
edge, not a mesh service, so it registers nothing in etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

import grpc.aio
from grpc_health.v1 import health, health_pb2_grpc

from registry.balancer import POLICIES
from registry.config import MeshConfig
from registry.errors import MeshError
from registry.ingress_descriptors import BackendReflection, MethodCatalog
from registry.ingress_directory import HealthReporter, ServiceDirectory
from registry.ingress_proxy import ProxyHandler, Router
from registry.ingress_reflection import ReflectionProxy
from registry.mesh import Mesh
from registry.mesh_tls import server_credentials
from registry.serve import configure_logging

logger = logging.getLogger(__name__)

DEFAULT_PORT = 50051


class Ingress:
    """A grpc.aio server that forwards calls into the mesh."""

    def __init__(
        self,
        mesh: Mesh,
        *,
        port: int = DEFAULT_PORT,
        bind_host: str = "0.0.0.0",
        policy: str = "round_robin",
    ) -> None:
        self.mesh = mesh
        self.port = port
        self.bind_host = bind_host
        self.directory = ServiceDirectory(mesh)
        self.router = Router(mesh, self.directory, policy=policy)
        backends = BackendReflection(self.router.channel)
        self.catalog = MethodCatalog(backends)
        self.reflection = ReflectionProxy(self.directory, backends)
        # grpc-stubs does not declare the asyncio servicer of grpcio-health-checking.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._reporter = HealthReporter(self.directory, self.health)
        self._health_task: asyncio.Task[None] | None = None
        self._server = grpc.aio.server()

    @property
    def address(self) -> str:
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind, start serving and keep the health status up to date."""
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self._server.add_generic_rpc_handlers(self.reflection.handlers())
        # Added last: it takes every method the handlers above do not serve.
        self._server.add_generic_rpc_handlers([ProxyHandler(self.router, self.catalog)])
        try:
            self.port = self._bind()
        except RuntimeError as exc:
            msg = (
                f"port: cannot listen on {self.address}, which is in use or not "
                "a local address; stop what listens there or choose another "
                "port with --port"
            )
            raise MeshError(msg) from exc
        await self._server.start()
        await self._reporter.update()
        self._health_task = asyncio.create_task(
            self._reporter.run(), name="ingress-health"
        )

    def _bind(self) -> int:
        tls = self.mesh.config.tls
        if tls is None:
            return self._server.add_insecure_port(self.address)
        # NOTE: any client with a mesh certificate may call through the
        # ingress; the services authorize those calls as the ingress identity.
        return self._server.add_secure_port(self.address, server_credentials(tls))

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, give in-flight calls `grace` seconds, stop."""
        await self.health.enter_graceful_shutdown()
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self._server.stop(grace)
        await self.router.close()
        logger.info("ingress stopped")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="registry.ingress",
        description="Forward gRPC calls on one port to live replicas in the mesh.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env.get("MESH_INGRESS_PORT", str(DEFAULT_PORT))),
        help=f"TCP port to listen on (env MESH_INGRESS_PORT, default {DEFAULT_PORT})",
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
        "--policy",
        default=env.get("MESH_INGRESS_POLICY", "round_robin"),
        choices=sorted(POLICIES),
        help="balancing policy (env MESH_INGRESS_POLICY, default round_robin)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=float(env.get("MESH_GRACE", "5")),
        help="seconds that in-flight calls get on shutdown (env MESH_GRACE)",
    )
    parser.add_argument(
        "--log-level",
        default=env.get("MESH_LOG_LEVEL", "INFO"),
        help="logging level (env MESH_LOG_LEVEL)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ingress until SIGTERM or SIGINT; return the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = MeshConfig.from_env(
            etcd_endpoints=args.etcd_endpoints, namespace=args.namespace
        )
        return asyncio.run(_serve(config, args))
    except MeshError as exc:
        print(f"registry.ingress: {exc}", file=sys.stderr, flush=True)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 0


async def _serve(config: MeshConfig, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with Mesh(config) as mesh:
        ingress = Ingress(
            mesh, port=args.port, bind_host=args.bind_host, policy=args.policy
        )
        await ingress.start()
        print(  # noqa: T201
            f"registry.ingress: listening at {ingress.address} for namespace "
            f"{config.namespace!r} (etcd {', '.join(config.endpoint_urls)})",
            flush=True,
        )
        await stop.wait()
        logger.info("shutting down the ingress at %s", ingress.address)
        await ingress.stop(args.grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
