"""Run UserService in the mesh: `python -m user_svc --help`.

Besides the flags of every mesh service, it takes --session-ttl (env
MESH_SESSION_TTL): the seconds that a login session lasts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from protos import user_pb2_grpc
from registry.etcd import EtcdClient
from registry.serve import ServiceSpec, run_service
from user_svc import SERVICE_NAME
from user_svc.servicer import UserServicer
from user_svc.sessions import DEFAULT_SESSION_TTL

# A session of less than 5 s ends before a client can use it. The maximum
# of 30 days is a policy choice: a longer login should log in again.
MIN_SESSION_TTL = 5
MAX_SESSION_TTL = 30 * 24 * 3600


def session_ttl(raw: str) -> int:
    """Parse --session-ttl; argparse turns the ValueError into a usage error."""
    try:
        ttl = int(raw)
    except ValueError:
        msg = f"invalid value {raw!r}; use whole seconds such as 3600"
        raise argparse.ArgumentTypeError(msg) from None
    if not MIN_SESSION_TTL <= ttl <= MAX_SESSION_TTL:
        msg = f"{ttl} is out of range; use {MIN_SESSION_TTL} to {MAX_SESSION_TTL} s"
        raise argparse.ArgumentTypeError(msg)
    return ttl


def session_parser() -> argparse.ArgumentParser:
    # add_help=False leaves --help to run_service's parser, which takes this
    # parser as a parent, so that --help lists the shared flags and this one.
    parser = argparse.ArgumentParser(prog="user_svc", add_help=False)
    parser.add_argument(
        "--session-ttl",
        type=session_ttl,
        default=os.environ.get("MESH_SESSION_TTL", str(DEFAULT_SESSION_TTL)),
        help="seconds that a login session lasts (env MESH_SESSION_TTL)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = session_parser()
    args, _ = parser.parse_known_args(argv)

    def build(etcd: EtcdClient) -> list[ServiceSpec]:
        servicer = UserServicer(
            etcd, etcd.config.namespace, session_ttl=args.session_ttl
        )
        return [
            ServiceSpec(
                SERVICE_NAME,
                lambda server: user_pb2_grpc.add_UserServiceServicer_to_server(
                    servicer, server
                ),
            )
        ]

    return run_service("user_svc", build, argv, parents=[parser])


if __name__ == "__main__":
    sys.exit(main())
