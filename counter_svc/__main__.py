"""Run CounterService in the mesh: `python -m counter_svc --help`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from counter_svc import SERVICE_NAME
from counter_svc.servicer import CounterServicer
from protos import counter_pb2_grpc
from registry.etcd import EtcdClient
from registry.serve import ServiceSpec, run_service


def build(etcd: EtcdClient) -> list[ServiceSpec]:
    """Return the services that this process serves, sharing one etcd client."""
    servicer = CounterServicer(etcd, etcd.config.namespace)
    return [
        ServiceSpec(
            SERVICE_NAME,
            lambda server: counter_pb2_grpc.add_CounterServiceServicer_to_server(
                servicer, server
            ),
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("counter_svc", build, argv)


if __name__ == "__main__":
    sys.exit(main())
