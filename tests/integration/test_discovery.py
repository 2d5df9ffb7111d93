"""Registration and discovery against a real etcd and real processes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from registry.config import MeshConfig
from registry.discovery import Resolver
from registry.errors import EtcdUnavailableError
from registry.etcd import EtcdClient
from registry.etcd_process import EtcdProcess
from registry.model import InstanceInfo, encode_record
from registry.registration import Registration
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

SERVICE = "mesh.counter.v1.CounterService"
ROOT = Path(__file__).resolve().parents[2]


def registration(
    etcd: EtcdClient, config: MeshConfig, name: str, port: int
) -> Registration:
    return Registration(
        etcd,
        config,
        services=[SERVICE],
        address=f"127.0.0.1:{port}",
        info=InstanceInfo(name),
    )


@pytest.fixture
async def resolver(
    etcd: EtcdClient, mesh_config: MeshConfig
) -> AsyncIterator[Resolver]:
    resolver = Resolver(etcd, mesh_config, SERVICE)
    resolver.start()
    await resolver.wait_ready(5)
    yield resolver
    await resolver.close()


async def wait_until(condition, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def put_when_reachable(client: EtcdClient, key: str, value: bytes) -> None:
    async with asyncio.timeout(15):
        while True:
            try:
                await client.put(key, value)
            except EtcdUnavailableError:
                await asyncio.sleep(0.2)
            else:
                return


def has(*ids: str):
    return lambda snapshot: set(snapshot) == set(ids)


async def test_registered_instance_appears_in_resolver(etcd, mesh_config, resolver):
    reg = registration(etcd, mesh_config, "a", 1001)
    await reg.start()

    await resolver.wait_for(has("a"), timeout=5)

    assert resolver.snapshot()["a"].address == "127.0.0.1:1001"
    await reg.stop()


async def test_clean_stop_removes_instance_at_once(etcd, mesh_config, resolver):
    reg = registration(etcd, mesh_config, "a", 1001)
    await reg.start()
    await reg.wait_registered(5)
    await resolver.wait_for(has("a"), timeout=5)

    await reg.stop()

    assert await etcd.get(mesh_config.service_prefix(SERVICE) + "a") is None
    await resolver.wait_for(has(), timeout=2)


async def test_revoked_lease_registers_again(etcd, mesh_config, resolver):
    reg = registration(etcd, mesh_config, "a", 1001)
    await reg.start()
    await reg.wait_registered(5)
    first_lease = reg.lease_id

    await etcd.revoke_lease(first_lease)
    await resolver.wait_for(has(), timeout=5)
    await resolver.wait_for(has("a"), timeout=10)
    await wait_until(lambda: reg.stats.registrations == 2, timeout=5)

    assert reg.stats.lease_losses == 1
    assert reg.lease_id != first_lease
    await reg.stop()


async def test_garbage_value_is_skipped(etcd, mesh_config, resolver):
    prefix = mesh_config.service_prefix(SERVICE)
    await etcd.put(prefix + "garbage", b"not json {")
    await etcd.put(
        prefix + "object", b'{"Op":0,"Addr":"127.0.0.1:7","Metadata":{"id":"object"}}'
    )
    await etcd.put(prefix + "go-null", b'{"Op":0,"Addr":"127.0.0.1:8","Metadata":null}')
    await etcd.put(prefix + "go-missing", b'{"Addr":"127.0.0.1:9"}')

    await resolver.wait_for(has("object", "go-null", "go-missing"), timeout=5)

    assert resolver.stats.skipped_values == 1


async def test_prefix_does_not_match_longer_service_name(etcd, mesh_config):
    short = Resolver(etcd, mesh_config, "counter")
    short.start()
    await etcd.put(
        mesh_config.service_prefix("counter2") + "x",
        encode_record("127.0.0.1:5", InstanceInfo("x")),
    )
    await etcd.put(
        mesh_config.service_prefix("counter") + "y",
        encode_record("127.0.0.1:6", InstanceInfo("y")),
    )

    await short.wait_for(has("y"), timeout=5)

    assert set(short.snapshot()) == {"y"}
    await short.close()


async def test_resolver_resumes_after_etcd_restart(
    etcd_server: EtcdProcess, mesh_config, resolver
):
    async with EtcdClient(mesh_config) as writer:
        await writer.put(
            mesh_config.service_prefix(SERVICE) + "before",
            encode_record("127.0.0.1:5", InstanceInfo("before")),
        )
        await resolver.wait_for(has("before"), timeout=5)

        etcd_server.stop()
        await asyncio.sleep(1)
        etcd_server.start()
        await put_when_reachable(
            writer,
            mesh_config.service_prefix(SERVICE) + "after",
            encode_record("127.0.0.1:6", InstanceInfo("after")),
        )

        await resolver.wait_for(has("before", "after"), timeout=15)

    assert resolver.stats.lists == 1


async def test_compaction_during_cut_relists_without_missing_removal(
    etcd_server: EtcdProcess, mesh_config, etcd
):
    proxy = TcpProxy("127.0.0.1", etcd_server.client_port)
    await proxy.start()
    proxied = dataclasses.replace(
        mesh_config,
        etcd_endpoints=MeshConfig.from_env({}, etcd_endpoints=proxy.url).etcd_endpoints,
    )
    prefix = mesh_config.service_prefix(SERVICE)
    for name in ("live", "dies"):
        await etcd.put(prefix + name, encode_record("127.0.0.1:5", InstanceInfo(name)))
    async with EtcdClient(proxied) as watched_etcd:
        resolver = Resolver(watched_etcd, proxied, SERVICE)
        resolver.start()
        await resolver.wait_for(has("live", "dies"), timeout=5)

        proxy.cut()
        await etcd.delete(prefix + "dies")
        for step in range(5):
            await etcd.put("/unrelated/key", str(step))
        await etcd.compact(await etcd.revision())
        proxy.heal()

        await resolver.wait_for(has("live"), timeout=20)

        assert resolver.stats.compactions >= 1
        assert resolver.stats.lists >= 2
        await resolver.close()
    await proxy.stop()


@pytest.fixture
def fake_service(mesh_config: MeshConfig) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "MESH_ETCD_ENDPOINTS": ",".join(mesh_config.endpoint_urls),
        "MESH_NAMESPACE": mesh_config.namespace,
        "MESH_LEASE_TTL": str(mesh_config.lease_ttl),
        "MESH_ADVERTISE_HOST": "127.0.0.1",
        "MESH_BIND_HOST": "127.0.0.1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.fake_service"], cwd=ROOT, env=env
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


async def test_sigkilled_process_disappears_when_lease_expires(fake_service, resolver):
    await resolver.wait_for(lambda s: len(s) == 1, timeout=15)

    fake_service.send_signal(signal.SIGKILL)
    fake_service.wait()
    await asyncio.sleep(0.5)

    assert len(resolver.snapshot()) == 1
    await resolver.wait_for(has(), timeout=10)


async def test_sigterm_deregisters_before_exit(
    fake_service, resolver, etcd, mesh_config
):
    await resolver.wait_for(lambda s: len(s) == 1, timeout=15)

    fake_service.send_signal(signal.SIGTERM)
    status = await asyncio.to_thread(fake_service.wait, 15)

    assert status == 0
    keys, _ = await etcd.get_prefix(mesh_config.services_prefix())
    assert keys == []


async def test_silent_watch_is_detected_and_endpoints_kept(
    etcd_server: EtcdProcess, mesh_config, etcd
):
    prefix = mesh_config.service_prefix(SERVICE)
    await etcd.put(prefix + "a", encode_record("127.0.0.1:5", InstanceInfo("a")))
    resolver = Resolver(
        etcd, mesh_config, SERVICE, watchdog_interval=0.5, watchdog_timeout=0.5
    )
    resolver.start()
    await resolver.wait_for(has("a"), timeout=5)

    etcd_server.pause()
    try:
        await wait_until(lambda: resolver.stats.silent_watches >= 1, timeout=10)
        assert set(resolver.snapshot()) == {"a"}
    finally:
        etcd_server.resume()
    await etcd.put(prefix + "b", encode_record("127.0.0.1:6", InstanceInfo("b")))

    await resolver.wait_for(has("a", "b"), timeout=15)
    assert resolver.stats.lists >= 2
    await resolver.close()


async def test_reset_etcd_holds_endpoints_until_they_return(
    etcd_server: EtcdProcess, mesh_config, tmp_path
):
    async with EtcdClient(mesh_config) as client:
        prefix = mesh_config.service_prefix(SERVICE)
        for step in range(5):
            await client.put("/filler", str(step))
        for name in ("a", "b"):
            await client.put(
                prefix + name, encode_record("127.0.0.1:5", InstanceInfo(name))
            )
        resolver = Resolver(client, mesh_config, SERVICE)
        resolver.start()
        await resolver.wait_for(has("a", "b"), timeout=5)
        seen: list[int] = []
        resolver.add_listener(lambda snapshot: seen.append(len(snapshot)))

        etcd_server.kill()
        etcd_server.data_dir = tmp_path / "empty-data"
        etcd_server.start()
        await put_when_reachable(
            client, prefix + "a", encode_record("127.0.0.1:5", InstanceInfo("a"))
        )

        await wait_until(lambda: resolver.stats.resets >= 1, timeout=30)
        assert set(resolver.snapshot()) == {"a", "b"}
        await resolver.wait_for(has("a"), timeout=30)
        assert 0 not in seen
        await resolver.close()


async def test_reset_past_old_revision_is_caught_after_resume(
    etcd_server: EtcdProcess, mesh_config, tmp_path
):
    proxy = TcpProxy("127.0.0.1", etcd_server.client_port)
    await proxy.start()
    proxied = dataclasses.replace(
        mesh_config,
        etcd_endpoints=MeshConfig.from_env({}, etcd_endpoints=proxy.url).etcd_endpoints,
    )
    prefix = mesh_config.service_prefix(SERVICE)
    async with EtcdClient(proxied) as watched:
        await watched.put(
            prefix + "old", encode_record("127.0.0.1:5", InstanceInfo("old"))
        )
        resolver = Resolver(watched, proxied, SERVICE)
        resolver.start()
        await resolver.wait_for(has("old"), timeout=5)

        proxy.cut()
        etcd_server.kill()
        etcd_server.data_dir = tmp_path / "empty-data"
        etcd_server.start()
        async with EtcdClient(mesh_config) as writer:
            for step in range(20):
                await put_when_reachable(writer, "/filler", str(step).encode())
            await writer.put(
                prefix + "new", encode_record("127.0.0.1:6", InstanceInfo("new"))
            )
        proxy.heal()

        await resolver.wait_for(has("new"), timeout=20)

        assert resolver.stats.cache_mismatches >= 1
        await resolver.close()
    await proxy.stop()
