"""meshctl: run, inspect and watch an etcd-mesh from the command line.

    meshctl up [--counter N] [--user N] [--front-port PORT] [--ingress-port PORT]
    meshctl scale SERVICE=N [SERVICE=N ...]
    meshctl ls [SERVICE] [--json]
    meshctl watch [SERVICE] [--json]
    meshctl health [SERVICE]
    meshctl etcd [--port PORT] [--data-dir DIR]
    meshctl certs init [--dir DIR] [--force] [--days N] [--ca-days N]
    meshctl auth init [--dir DIR]

Exit status: 0 on success, also when Ctrl-C or SIGTERM stops `up`, `watch`
or `etcd`. 1 when `health` finds an instance that is not serving, or when the
etcd of `meshctl etcd` exits on its own. 2 on an expected failure (invalid
setting, invalid scale argument, etcd unreachable, a port taken), which is
printed as one line without a traceback. 130 when Ctrl-C interrupts `ls` or
`health`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from registry.cli_auth import add_auth_parser, run_auth
from registry.cli_certs import add_certs_parser, options_from_args, run_certs
from registry.cli_common import SERVICE_ALIASES, warn
from registry.cli_etcd import run_etcd
from registry.cli_health import run_health
from registry.cli_ls import run_ls
from registry.cli_scale import run_scale
from registry.cli_up import UpOptions, run_up
from registry.cli_watch import run_watch
from registry.config import MeshConfig
from registry.errors import MeshError
from registry.replicas import MAX_REPLICAS

logger = logging.getLogger(__name__)

EXIT_FAILURE = 2
EXIT_INTERRUPTED = 130

_SERVICE_HELP = (
    "full proto service name, or an alias: "
    + ", ".join(f"{alias}" for alias in sorted(SERVICE_ALIASES))
    + " (default: every service)"
)


def port_number(raw: str) -> int:
    """Parse a TCP port for argparse."""
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        msg = f"invalid port {raw!r}; use a number from 1 to 65535"
        raise argparse.ArgumentTypeError(msg)
    return port


def replica_count(raw: str) -> int:
    """Parse a number of replicas for argparse."""
    try:
        count = int(raw)
    except ValueError:
        count = -1
    if not 0 <= count <= MAX_REPLICAS:
        msg = f"invalid replica count {raw!r}; use a number from 0 to {MAX_REPLICAS}"
        raise argparse.ArgumentTypeError(msg)
    return count


def positive_seconds(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        msg = f"invalid duration {raw!r}; use a positive number of seconds"
        raise argparse.ArgumentTypeError(msg)
    return seconds


def _add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    group = parser.add_argument_group("mesh options")
    group.add_argument(
        "--etcd-endpoints",
        default=default,
        metavar="URLS",
        help="comma-separated etcd URLs (default: $MESH_ETCD_ENDPOINTS "
        "or http://127.0.0.1:2379)",
    )
    group.add_argument(
        "--namespace",
        default=default,
        help="key prefix of the mesh in etcd (default: $MESH_NAMESPACE or /mesh)",
    )
    group.add_argument(
        "--log-level",
        default=default,
        choices=("debug", "info", "warning", "error"),
        help="level of the log lines on stderr (default: warning)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshctl", description="Run, inspect and watch an etcd-mesh."
    )
    _add_global_options(parser, None)
    # The same options after the subcommand; SUPPRESS keeps a value given
    # before the subcommand when the option is not repeated after it.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up", parents=[common], help="start etcd, the services and the front"
    )
    up.add_argument(
        "--counter",
        type=replica_count,
        default=2,
        metavar="N",
        help="counter_svc replicas to start (default: 2)",
    )
    up.add_argument(
        "--user",
        type=replica_count,
        default=2,
        metavar="N",
        help="user_svc replicas to start (default: 2)",
    )
    up.add_argument(
        "--front-port",
        type=port_number,
        default=8080,
        metavar="PORT",
        help="HTTP port of the front on 127.0.0.1 (default: 8080)",
    )
    up.add_argument(
        "--ingress-port",
        type=port_number,
        default=50051,
        metavar="PORT",
        help="gRPC port of the ingress on 127.0.0.1 (default: 50051)",
    )
    up.add_argument(
        "--ready-timeout",
        type=positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="maximum wait for every replica to register (default: 60)",
    )
    up.add_argument(
        "--secure",
        action="store_true",
        help="TLS and auth everywhere: certificates in .mesh/certs, etcd with "
        "client certificates and auth, mTLS between services",
    )

    scale = commands.add_parser(
        "scale",
        parents=[common],
        help="change the replica counts of the running meshctl up",
        description="Store replica counts in etcd. The running meshctl up "
        "starts replicas or drains surplus ones until the counts match.",
    )
    scale.add_argument(
        "assignments",
        nargs="+",
        metavar="SERVICE=N",
        help=f"a service (counter_svc or user_svc) and its replica count, "
        f"from 0 to {MAX_REPLICAS}",
    )

    for name, text in (
        ("ls", "list the registered instances"),
        ("watch", "print instances as they are added, removed and updated"),
        ("health", "call grpc.health.v1 Health/Check on every instance"),
    ):
        command = commands.add_parser(name, parents=[common], help=text)
        command.add_argument(
            "service", nargs="?", metavar="SERVICE", help=_SERVICE_HELP
        )
        if name != "health":
            command.add_argument(
                "--json", action="store_true", help="print JSON instead of a table"
            )

    etcd = commands.add_parser(
        "etcd", parents=[common], help="run an embedded etcd in the foreground"
    )
    etcd.add_argument(
        "--port",
        type=port_number,
        default=2379,
        help="client port on 127.0.0.1 (default: 2379)",
    )
    etcd.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".mesh/etcd"),
        metavar="DIR",
        help="data directory (default: .mesh/etcd)",
    )
    add_certs_parser(commands)
    add_auth_parser(commands)
    return parser


# One return per subcommand reads more plainly than a dispatch table here.
def _command(args: argparse.Namespace) -> Coroutine[Any, Any, int]:  # noqa: PLR0911
    if args.command == "etcd":
        return run_etcd(args.port, args.data_dir.absolute())
    if args.command == "certs":
        return run_certs(options_from_args(args))
    config = MeshConfig.from_env(
        etcd_endpoints=args.etcd_endpoints, namespace=args.namespace
    )
    if args.command == "up":
        options = UpOptions(
            counters=args.counter,
            users=args.user,
            front_port=args.front_port,
            ready_timeout=args.ready_timeout,
            ingress_port=args.ingress_port,
            secure=args.secure,
        )
        return run_up(config, options)
    if args.command == "auth":
        return run_auth(config, args.dir)
    if args.command == "scale":
        return run_scale(config, args.assignments)
    if args.command == "ls":
        return run_ls(config, args.service, as_json=args.json)
    if args.command == "watch":
        return run_watch(config, args.service, as_json=args.json)
    return run_health(config, args.service)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or "warning").upper(),
        format="meshctl: %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(_command(args))
    except (MeshError, OSError) as exc:
        # OSError: a file or folder that meshctl cannot create, or a process
        # that it cannot start.
        warn(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
