"""Fixtures of the multi-host tests: a bridged network of namespaces, a 3-member
etcd cluster on it, replicas and a load client, each on its own address.

    10.213.7.11-13  etcd1..etcd3      10.213.7.21+  rep1, rep2, ...
    10.213.7.100    client (load client and etcdctl)

Each test builds its own network and removes it when it ends.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.multihost.cluster import EtcdCluster
from tests.multihost.netns import (
    PREFIX,
    SKIP_REASON,
    Host,
    Network,
    missing_requirement,
    remove_stale_namespaces,
)
from tests.multihost.processes import (
    LEASE_TTL,
    MESH_NAMESPACE,
    LoadClientProcess,
    Replicas,
    mesh_environment,
    wait_until,
)

CLIENT_HOST_NUMBER = 100
ETCD_HOST_BASE = 10

_networks = itertools.count(1)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if any(SKIP_REASON in str(report.longrepr) for report in skipped):
        terminalreporter.write_line(f"multi-host tests skipped: {SKIP_REASON}")


@pytest.fixture(scope="session")
def namespaces_allowed() -> None:
    """Skip unless root, then delete namespaces left by crashed runs of this suite."""
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    remove_stale_namespaces()


@pytest.fixture
def network(namespaces_allowed: None) -> Iterator[Network]:
    net = Network(run_id=f"{PREFIX}-{os.getpid()}-{next(_networks)}")
    try:
        net.create()
        yield net
    finally:
        net.destroy()


@pytest.fixture
def client_host(network: Network) -> Host:
    return network.add_host("client", CLIENT_HOST_NUMBER)


@pytest.fixture
def etcd_cluster(
    network: Network, client_host: Host, tmp_path: Path
) -> Iterator[EtcdCluster]:
    hosts = [network.add_host(f"etcd{n}", ETCD_HOST_BASE + n) for n in (1, 2, 3)]
    cluster = EtcdCluster(hosts, tmp_path / "etcd", client_host)
    (tmp_path / "etcd").mkdir()
    try:
        cluster.start()
        wait_until(cluster.healthy, 30, "the etcd cluster has a quorum")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def mesh_env(etcd_cluster: EtcdCluster) -> dict[str, str]:
    return mesh_environment(etcd_cluster.endpoints, MESH_NAMESPACE, LEASE_TTL)


@pytest.fixture
def replicas(
    network: Network, mesh_env: dict[str, str], tmp_path: Path
) -> Iterator[Replicas]:
    started = Replicas(network, mesh_env, tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def start_load_client(
    client_host: Host, mesh_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., LoadClientProcess]]:
    """Start the load client in the client host with extra arguments."""
    clients: list[LoadClientProcess] = []

    def start(*arguments: str) -> LoadClientProcess:
        work_dir = tmp_path / f"load-{len(clients)}"
        work_dir.mkdir()
        client = LoadClientProcess(client_host, mesh_env, work_dir, list(arguments))
        client.start()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.kill()
