"""Interop with etcd's own Go naming code (etcd 3.4 clientv3/naming), both ways.

Go to Python: grpc-go with etcd's resolver and round_robin dials the Python
replicas that registered themselves. Python to Go: an endpoint written by
etcd's Go `endpoints.Manager` (Metadata null) is found by the Python resolver
and takes calls.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc.aio
import pytest

from protos import counter_pb2, counter_pb2_grpc
from registry.config import MeshConfig
from registry.etcd import EtcdClient
from registry.mesh import Mesh
from tests.integration.fake_service import MemoryCounter
from tests.integration.service_process import ServiceProcesses
from tests.interop.conftest import GoProgram

pytestmark = pytest.mark.integration

SERVICE = "mesh.counter.v1.CounterService"
REPLICAS = 3
CALLS = 30
# grpc-go panics when a resolver address carries a map in Metadata. Debian's
# grpc-go 1.33 uses addresses as map keys in its base balancer, so Go fails
# with "hash of unhashable type". Code that compares such addresses with ==
# fails with "comparing uncomparable type" instead.
GO_MAP_PANIC = re.compile(
    r"panic: runtime error: (hash of unhashable|comparing uncomparable) "
    r"type map\[string\]interface \{\}"
)


def go_target(config: MeshConfig) -> str:
    """Return the etcd resolver target of SERVICE.

    grpc-go splits `etcd://<authority>/<endpoint>`, and etcd's resolver uses
    the endpoint verbatim as its key prefix. The namespace starts with "/",
    so the target has four slashes: etcd:////test-mesh/services/<service>/.
    """
    return f"etcd:///{config.service_prefix(SERVICE)}"


async def go_dial(
    go_program: GoProgram, config: MeshConfig, *, expect: int, calls: int
) -> list[dict[str, object]]:
    result = await go_program.run(
        "dial",
        "-etcd",
        config.endpoint_urls[0],
        "-target",
        go_target(config),
        "-service",
        SERVICE,
        "-expect",
        str(expect),
        "-calls",
        str(calls),
        "-timeout",
        "30s",
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def processes(mesh_config: MeshConfig, tmp_path: Path) -> Iterator[ServiceProcesses]:
    started = ServiceProcesses(mesh_config, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
async def unregistered_server() -> AsyncIterator[tuple[str, MemoryCounter]]:
    """A CounterService on loopback that does not register itself in etcd."""
    servicer = MemoryCounter()
    server = grpc.aio.server()
    counter_pb2_grpc.add_CounterServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(grace=None)


async def test_go_round_robin_reaches_every_replica(
    go_program, mesh_config, etcd, processes
):
    replicas = [
        await processes.start(etcd, "counter_svc", SERVICE) for _ in range(REPLICAS)
    ]

    replies = await go_dial(go_program, mesh_config, expect=REPLICAS, calls=CALLS)

    served = Counter(str(reply["peer"]) for reply in replies)
    assert len(replies) == CALLS
    assert set(served) == {replica.address for replica in replicas}
    # round_robin over three READY subchannels gives each exactly a third.
    assert sorted(served.values()) == [CALLS // REPLICAS] * REPLICAS
    assert {reply["status"] for reply in replies} == {"SERVING"}


async def test_go_client_panics_on_object_metadata(
    go_program, mesh_config, etcd, processes
):
    replica = await processes.start(etcd, "counter_svc", SERVICE)
    # The record a registry would write with Metadata as a JSON object.
    record = {"Op": 0, "Addr": replica.address, "Metadata": {"id": "object"}}
    await etcd.put(mesh_config.service_prefix(SERVICE) + "object", json.dumps(record))

    result = await go_program.run(
        "dial",
        "-etcd",
        mesh_config.endpoint_urls[0],
        "-target",
        go_target(mesh_config),
        "-calls",
        "3",
        "-timeout",
        "20s",
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert GO_MAP_PANIC.search(result.stderr), result.stderr


async def test_go_endpoint_manager_record_takes_python_calls(
    go_program, mesh_config, etcd: EtcdClient, unregistered_server
):
    address, servicer = unregistered_server
    prefix = mesh_config.service_prefix(SERVICE)
    key = prefix + "go-endpoint"

    result = await go_program.run(
        "register",
        "-etcd",
        mesh_config.endpoint_urls[0],
        "-prefix",
        prefix.removesuffix("/"),
        "-key",
        key,
        "-addr",
        address,
    )

    assert result.returncode == 0, result.stderr
    stored = await etcd.get(key)
    assert stored is not None
    assert json.loads(stored.value) == {"Op": 0, "Addr": address, "Metadata": None}

    async with Mesh(mesh_config) as mesh:
        resolver = mesh.resolver(SERVICE)
        try:
            await resolver.wait_for(lambda found: "go-endpoint" in found, 10)
        except TimeoutError:
            pytest.fail(
                f"the Python resolver did not find {key!r} within 10 s; "
                f"it skipped {resolver.stats.skipped_values} invalid values"
            )
        stub = counter_pb2_grpc.CounterServiceStub(mesh.channel(SERVICE))
        values = [
            (
                await stub.Increment(counter_pb2.IncrementRequest(name="go", delta=2))
            ).counter.value
            for _ in range(3)
        ]
        endpoint = resolver.snapshot()["go-endpoint"]

    assert endpoint.address == address
    assert values == [2, 4, 6]
    assert servicer.values == {"go": 6}
