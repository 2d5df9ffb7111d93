"""Mesh: the client entry point. One etcd connection, one resolver per
service, and balanced channels that generated stubs accept.

    async with Mesh(MeshConfig.from_env()) as mesh:
        stub = CounterServiceStub(mesh.channel("mesh.counter.v1.CounterService"))
        reply = await stub.Increment(IncrementRequest(name="demo", delta=1))
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from registry.channel import MeshChannel
from registry.config import MeshConfig
from registry.discovery import Resolver
from registry.etcd import EtcdClient
from registry.mesh_tls import ChannelFactory


class Mesh:
    """Shared discovery state for one client process."""

    def __init__(self, config: MeshConfig, *, etcd: EtcdClient | None = None) -> None:
        self.config = config
        self._owns_etcd = etcd is None
        self.etcd = etcd if etcd is not None else EtcdClient(config)
        self._resolvers: dict[str, Resolver] = {}
        self._channels: dict[tuple[str, str], MeshChannel] = {}

    async def __aenter__(self) -> Self:
        await self.etcd.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        for resolver in self._resolvers.values():
            await resolver.close()
        self._channels.clear()
        self._resolvers.clear()
        if self._owns_etcd:
            await self.etcd.close()

    def resolver(self, service: str) -> Resolver:
        """Return the shared resolver of a service, starting it on first use."""
        resolver = self._resolvers.get(service)
        if resolver is None:
            resolver = Resolver(self.etcd, self.config, service)
            resolver.start()
            self._resolvers[service] = resolver
        return resolver

    def channel(self, service: str, *, policy: str = "round_robin") -> MeshChannel:
        """Return the balanced channel of a service for one policy."""
        key = (service, policy)
        channel = self._channels.get(key)
        if channel is None:
            channel = MeshChannel(
                self.resolver(service),
                policy=policy,
                channel_factory=self.channel_factory(service),
            )
            self._channels[key] = channel
        return channel

    def channel_factory(self, service: str) -> ChannelFactory | None:
        """Return what opens mTLS channels to service, or None without TLS."""
        tls = self.config.tls
        return ChannelFactory(tls, service) if tls else None

    async def list_services(self) -> list[str]:
        """Return the names of services with at least one key in etcd."""
        prefix = self.config.services_prefix()
        kvs, _ = await self.etcd.get_prefix(prefix)
        names = {kv.key[len(prefix) :].split("/", 1)[0] for kv in kvs}
        return sorted(name for name in names if name)
