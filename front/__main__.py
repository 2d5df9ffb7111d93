"""`python -m front`: serve the front with uvicorn.

Flags override the MESH_* environment variables (see registry.config).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn

from front.app import create_app
from front.backends import DEFAULT_CALL_TIMEOUT
from registry.config import MeshConfig
from registry.errors import ConfigError

# Open SSE streams keep connections busy, so a stop waits at most this long.
GRACEFUL_SHUTDOWN_SECONDS = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m front", description="Serve the HTTP front of the mesh."
    )
    parser.add_argument("--port", type=int, default=8080, help="TCP port to listen on")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--etcd-endpoints",
        help="comma-separated etcd URLs (default: MESH_ETCD_ENDPOINTS)",
    )
    parser.add_argument(
        "--namespace", help="key prefix of the mesh in etcd (default: MESH_NAMESPACE)"
    )
    parser.add_argument(
        "--call-timeout",
        type=float,
        default=DEFAULT_CALL_TIMEOUT,
        help="deadline of each backend call, in seconds (default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        return _fail(f"invalid --port {args.port}; use 0 to 65535")
    if args.call_timeout <= 0:
        return _fail(f"invalid --call-timeout {args.call_timeout}; use seconds > 0")
    try:
        config = MeshConfig.from_env(
            etcd_endpoints=args.etcd_endpoints, namespace=args.namespace
        )
    except ConfigError as exc:
        return _fail(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(config, call_timeout=args.call_timeout)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0


def _fail(message: str) -> int:
    sys.stderr.write(f"front: {message}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
