"""In-process backends for the front's unit tests.

A real grpc.aio server on 127.0.0.1 serves in-memory CounterService and
UserService fakes, each behind the same trailer interceptor the mesh servers
use. A fixed resolver replaces etcd discovery, so the front talks to
the fakes through a real MeshChannel.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

import grpc
import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from front.app import create_app
from protos import counter_pb2, counter_pb2_grpc, user_pb2, user_pb2_grpc
from registry.channel import MeshChannel
from registry.config import MeshConfig
from registry.discovery import DiscoveryEvent
from registry.errors import EtcdUnavailableError
from registry.interceptors import InstanceTrailerInterceptor
from registry.mesh import Mesh
from registry.model import Endpoint, InstanceInfo

Context = grpc.aio.ServicerContext[Any, Any]

COUNTER = "mesh.counter.v1.CounterService"
USER = "mesh.user.v1.UserService"


class MemoryCounters(counter_pb2_grpc.CounterServiceServicer):
    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.revision = 0
        self.changed = asyncio.Condition()
        self.watch_calls = 0
        self.requests: list[Any] = []

    async def Increment(self, request: Any, context: Context) -> Any:
        self.requests.append(request)
        if request.delta == 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "delta: must not be 0"
            )
        value = self.values.get(request.name, 0) + request.delta
        self.values[request.name] = value
        self.revision += 1
        async with self.changed:
            self.changed.notify_all()
        return counter_pb2.IncrementResponse(counter=self._counter(request.name))

    async def GetCounter(self, request: Any, context: Context) -> Any:
        return counter_pb2.GetCounterResponse(counter=self._counter(request.name))

    async def ListCounters(self, request: Any, context: Context) -> Any:
        if request.page_token not in {"", "next"}:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"page_token: invalid token {request.page_token!r}",
            )
        names = sorted(self.values)
        return counter_pb2.ListCountersResponse(
            counters=[self._counter(name) for name in names]
        )

    async def WatchCounter(self, request: Any, context: Context) -> AsyncIterator[Any]:
        self.watch_calls += 1
        last = -1
        while True:
            if self.revision != last:
                last = self.revision
                yield counter_pb2.WatchCounterResponse(
                    counter=self._counter(request.name), revision=last
                )
            async with self.changed:
                await self.changed.wait_for(lambda: self.revision != last)  # noqa: B023

    def _counter(self, name: str) -> Any:
        return counter_pb2.Counter(name=name, value=self.values.get(name, 0))


class MemoryUsers(user_pb2_grpc.UserServiceServicer):
    def __init__(self) -> None:
        self.passwords: dict[str, str] = {}
        self.sessions: dict[str, str] = {}

    async def CreateUser(self, request: Any, context: Context) -> Any:
        if request.username in self.passwords:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"username: {request.username!r} is taken",
            )
        self.passwords[request.username] = request.password
        return user_pb2.CreateUserResponse(user=self._user(request.username))

    async def GetUser(self, request: Any, context: Context) -> Any:
        if request.username not in self.passwords:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such user")
        return user_pb2.GetUserResponse(user=self._user(request.username))

    async def ListUsers(self, request: Any, context: Context) -> Any:
        users = [self._user(name) for name in sorted(self.passwords)]
        return user_pb2.ListUsersResponse(users=users)

    async def Login(self, request: Any, context: Context) -> Any:
        if self.passwords.get(request.username) != request.password:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "wrong username or password"
            )
        token = secrets.token_urlsafe(32)
        self.sessions[hashlib.sha256(token.encode()).hexdigest()] = request.username
        return user_pb2.LoginResponse(
            session_token=token,
            expire_time=_timestamp(time.time() + 3600),
            user=self._user(request.username),
        )

    async def ValidateSession(self, request: Any, context: Context) -> Any:
        username = self.sessions.get(_token_hash(request.session_token))
        if username is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown session")
        return user_pb2.ValidateSessionResponse(
            user=self._user(username), expire_time=_timestamp(time.time() + 3600)
        )

    async def Logout(self, request: Any, context: Context) -> Any:
        self.sessions.pop(_token_hash(request.session_token), None)
        return user_pb2.LogoutResponse()

    def _user(self, username: str) -> Any:
        return user_pb2.User(
            username=username, display_name=username.title(), create_time=_timestamp(0)
        )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class FixedResolver:
    """A resolver whose endpoints the test sets by hand."""

    def __init__(self, service: str, namespace: str) -> None:
        self.service = service
        self.namespace = namespace
        self.ready = True
        self._endpoints: dict[str, Endpoint] = {}
        self._listeners: list[Callable[[Mapping[str, Endpoint]], None]] = []
        self._queues: set[asyncio.Queue[DiscoveryEvent]] = set()

    def set_endpoints(self, endpoints: list[Endpoint]) -> None:
        old = self._endpoints
        self._endpoints = {endpoint.instance_id: endpoint for endpoint in endpoints}
        events = [
            DiscoveryEvent("removed", e, 0)
            for k, e in old.items()
            if k not in self._endpoints
        ]
        events += [
            DiscoveryEvent("added", e, 0)
            for k, e in self._endpoints.items()
            if k not in old
        ]
        for listener in self._listeners:
            listener(self.snapshot())
        for queue in self._queues:
            for event in events:
                queue.put_nowait(event)

    def snapshot(self) -> dict[str, Endpoint]:
        return dict(self._endpoints)

    def add_listener(self, listener: Callable[[Mapping[str, Endpoint]], None]) -> None:
        self._listeners.append(listener)

    async def wait_ready(self, timeout: float) -> None:
        return None

    async def wait_for(self, predicate: Any, timeout: float) -> None:
        raise NotImplementedError

    async def subscribe(self) -> AsyncIterator[DiscoveryEvent]:
        queue: asyncio.Queue[DiscoveryEvent] = asyncio.Queue()
        for endpoint in self._endpoints.values():
            queue.put_nowait(DiscoveryEvent("added", endpoint, 0))
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)


class FakeEtcd:
    def __init__(self, config: MeshConfig) -> None:
        self.config = config
        self.up = True

    async def revision(self) -> int:
        if not self.up:
            raise EtcdUnavailableError(
                self.config.endpoint_urls, "test says it is down"
            )
        return 1


class FakeMesh:
    """What the front uses of Mesh, with discovery set by the test."""

    def __init__(self, config: MeshConfig) -> None:
        self.config = config
        self.etcd = FakeEtcd(config)
        self.resolvers: dict[str, FixedResolver] = {}
        self.channels: dict[str, MeshChannel] = {}

    def resolver(self, service: str) -> FixedResolver:
        if service not in self.resolvers:
            self.resolvers[service] = FixedResolver(service, self.config.namespace)
        return self.resolvers[service]

    def channel(self, service: str, *, policy: str = "round_robin") -> MeshChannel:
        if service not in self.channels:
            resolver = cast("Any", self.resolver(service))
            self.channels[service] = MeshChannel(resolver, policy=policy)
        return self.channels[service]

    async def list_services(self) -> list[str]:
        if not self.etcd.up:
            raise EtcdUnavailableError(
                self.config.endpoint_urls, "test says it is down"
            )
        return sorted(name for name, r in self.resolvers.items() if r.snapshot())

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


class Backend:
    """An in-process gRPC server with both fakes, under one instance id."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.counters = MemoryCounters()
        self.users = MemoryUsers()
        self.server = grpc.aio.server(
            interceptors=[InstanceTrailerInterceptor(instance_id)]
        )
        counter_pb2_grpc.add_CounterServiceServicer_to_server(
            self.counters, self.server
        )
        user_pb2_grpc.add_UserServiceServicer_to_server(self.users, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def endpoint(self, service: str) -> Endpoint:
        info = InstanceInfo(
            self.instance_id, version="9.9.9", start_time=time.time() - 5
        )
        return Endpoint(service, self.instance_id, f"127.0.0.1:{self.port}", info)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop(None)


def fake_config() -> MeshConfig:
    return MeshConfig.from_env(
        {}, etcd_endpoints="http://127.0.0.1:1", namespace="/unit", lease_ttl=3
    )


def app_with(mesh: FakeMesh, *, call_timeout: float = 2.0, **options: Any) -> Any:
    """Build the front on mesh; options go to create_app (security, clock)."""
    return create_app(
        mesh.config, mesh=cast("Mesh", mesh), call_timeout=call_timeout, **options
    )
