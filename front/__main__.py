"""`python -m front`: serve the front with uvicorn.

Flags override the MESH_* environment variables (see registry.config).
"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from front.app import create_app
from front.backends import DEFAULT_CALL_TIMEOUT
from front.security import SecuritySettings
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

    tls = parser.add_argument_group("TLS")
    tls.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="PEM certificate (chain) to serve HTTPS with; needs --tls-key",
    )
    tls.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="PEM private key of --tls-cert"
    )
    tls.add_argument(
        "--behind-tls",
        action="store_true",
        help="mark cookies Secure on plain HTTP too, for a front behind a "
        "proxy that terminates TLS",
    )
    tls.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="comma-separated addresses of reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto headers are trusted "
        "(default: none, so the client address is the peer's)",
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
    tls_problem = _check_tls_files(args.tls_cert, args.tls_key)
    if tls_problem is not None:
        return _fail(tls_problem)
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
    security = SecuritySettings(secure_cookies=args.behind_tls)
    app = create_app(config, call_timeout=args.call_timeout, security=security)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        # uvicorn trusts X-Forwarded-* from 127.0.0.1 by default, which would
        # let any local client pick its address for the login limits.
        proxy_headers=args.forwarded_allow_ips is not None,
        forwarded_allow_ips=args.forwarded_allow_ips,
    )
    return 0


def _check_tls_files(cert: Path | None, key: Path | None) -> str | None:
    """Return why --tls-cert and --tls-key cannot be used, or None."""
    if (cert is None) != (key is None):
        return "--tls-cert and --tls-key go together; pass both or neither"
    if cert is None or key is None:
        return None
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not path.is_file():
            return f"invalid {flag} {str(path)!r}: no such file"
    # Load the pair once here, so that a bad file gets one line, not the
    # traceback that uvicorn would print.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        return f"invalid --tls-cert {str(cert)!r} or --tls-key {str(key)!r}: {exc}"
    return None


def _fail(message: str) -> int:
    sys.stderr.write(f"front: {message}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
