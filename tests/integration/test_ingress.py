"""The gRPC ingress (`python -m registry.ingress`) in front of a real mesh.

One etcd, one counter_svc, one user_svc and one ingress process serve the
whole module. Tests that need their own backend start an in-process
MeshServer with a test-only echo service that handles raw bytes, so nothing
can decode its messages on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from counter_svc import SERVICE_NAME as COUNTER_SERVICE
from protos import counter_pb2, counter_pb2_grpc
from registry.config import MeshConfig
from registry.etcd import EtcdClient
from registry.etcd_process import EtcdProcess, free_port
from registry.model import INSTANCE_METADATA_KEY
from registry.serve import MeshServer, ServiceSpec
from tests.integration.service_process import REPO_ROOT, ServiceProcesses
from user_svc import SERVICE_NAME as USER_SERVICE

pytestmark = pytest.mark.integration

Context = grpc.aio.ServicerContext[bytes, bytes]

GRPCURL = REPO_ROOT / ".venv" / "bin" / "grpcurl"
ECHO_SERVICE = "test.ingress.Echo"
LOCAL_SERVICES = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}
ECHO_PROTO = """\
syntax = "proto3";
package test.ingress;
message Note { string text = 1; }
service Echo {
  rpc Echo(Note) returns (Note);
  rpc Chat(stream Note) returns (stream Note);
  rpc Slow(Note) returns (Note);
}
"""


# --- the module's mesh --------------------------------------------------------


@dataclass
class IngressProcess:
    config: MeshConfig
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        env.update(
            MESH_ETCD_ENDPOINTS=",".join(self.config.endpoint_urls),
            MESH_NAMESPACE=self.config.namespace,
            MESH_LEASE_TTL=str(self.config.lease_ttl),
            MESH_GRACE="1",
            PYTHONUNBUFFERED="1",
        )
        argv = [sys.executable, "-m", "registry.ingress", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*argv, "--bind-host", "127.0.0.1"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_serving(timeout)

    def _wait_serving(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.log_path.read_text()
                with contextlib.suppress(grpc.RpcError):
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.1)
        raise TimeoutError(f"the ingress did not serve:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@dataclass
class Stack:
    config: MeshConfig
    processes: ServiceProcesses
    ingress: IngressProcess
    tmp: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("ingress")
    etcd = EtcdProcess(
        data_dir=tmp / "etcd-data",
        client_port=free_port(),
        peer_port=free_port(),
        log_path=tmp / "etcd.log",
    )
    etcd.start()
    config = MeshConfig.from_env(
        {},
        etcd_endpoints=etcd.client_url,
        namespace="/ingress-test",
        lease_ttl=3,
        advertise_host="127.0.0.1",
    )
    processes = ServiceProcesses(config, tmp)
    ingress = IngressProcess(config, tmp / "ingress.log")
    try:

        async def start_services() -> None:
            async with EtcdClient(config) as client:
                await asyncio.gather(
                    processes.start(client, "counter_svc", COUNTER_SERVICE),
                    processes.start(client, "user_svc", USER_SERVICE),
                )

        asyncio.run(start_services())
        ingress.start()
        yield Stack(config, processes, ingress, tmp)
        assert ingress.stop() == 0
    finally:
        if ingress.process is not None and ingress.process.poll() is None:
            ingress.process.kill()
        processes.stop_all()
        etcd.kill()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[EtcdClient]:
    async with EtcdClient(stack.config) as etcd:
        yield etcd


@pytest.fixture
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(stack.ingress.address) as opened:
        yield opened


def grpcurl(
    stack: Stack, *command: str, flags: tuple[str, ...] = (), check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `grpcurl -plaintext FLAGS <ingress> COMMAND` and return the result."""
    assert GRPCURL.exists(), f"grpcurl is missing at {GRPCURL}"
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", *flags, stack.ingress.address, *command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


async def grpcurl_async(
    stack: Stack, *command: str, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run grpcurl without blocking the event loop of in-process backends."""
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        *flags,
        stack.ingress.address,
        *command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return subprocess.CompletedProcess(
        command, process.returncode, stdout.decode(), stderr.decode()
    )


def raw_unary(channel: grpc.aio.Channel, path: str) -> Any:
    """Return a unary method that sends and receives raw bytes."""
    return channel.unary_unary(
        path, request_serializer=None, response_deserializer=None
    )


# --- an echo service that never decodes its messages ---------------------------


@dataclass
class EchoRecord:
    """What the echo backend saw, per method name."""

    metadata: list[dict[str, Any]] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)
    remaining: dict[str, list[float | None]] = field(default_factory=dict)


class EchoHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """test.ingress.Echo on raw bytes: Echo, Chat (bidirectional) and Slow."""

    def __init__(self, record: EchoRecord) -> None:
        self.record = record

    def service(self, handler_call_details):
        method = handler_call_details.method
        if method == f"/{ECHO_SERVICE}/Echo":
            return grpc.unary_unary_rpc_method_handler(self.echo)
        if method == f"/{ECHO_SERVICE}/Chat":
            return grpc.stream_stream_rpc_method_handler(self.chat)
        if method == f"/{ECHO_SERVICE}/Slow":
            return grpc.unary_unary_rpc_method_handler(self.slow)
        return None

    def _observe(self, name: str, context: Context) -> None:
        self.record.metadata.append(dict(context.invocation_metadata() or ()))
        self.record.remaining.setdefault(name, []).append(context.time_remaining())

    async def echo(self, request: bytes, context: Context) -> bytes:
        self._observe("Echo", context)
        self.record.requests.append(request)
        seen = dict(context.invocation_metadata() or ()).get("x-test", "")
        await context.send_initial_metadata((("x-backend-header", "sent"),))
        context.set_trailing_metadata((("x-seen-test", seen),))
        return request

    async def chat(self, requests, context: Context):
        self._observe("Chat", context)
        async for request in requests:
            yield request

    async def slow(self, request: bytes, context: Context) -> bytes:
        self._observe("Slow", context)
        await asyncio.sleep(30)
        return request


@dataclass
class EchoBackend:
    record: EchoRecord
    server: MeshServer


async def wait_until_reachable(stack: Stack, timeout: float = 10.0) -> None:
    """Call Echo through the ingress until its discovery has the new replica."""
    async with grpc.aio.insecure_channel(stack.ingress.address) as channel:
        echo = raw_unary(channel, f"/{ECHO_SERVICE}/Echo")
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await echo(b"probe", timeout=1)
                    return
                await asyncio.sleep(0.05)


@pytest.fixture
async def echo_backend(stack: Stack, client: EtcdClient) -> AsyncIterator[EchoBackend]:
    record = EchoRecord()
    spec = ServiceSpec(
        ECHO_SERVICE,
        lambda server: server.add_generic_rpc_handlers((EchoHandler(record),)),
    )
    server = MeshServer(
        [spec],
        stack.config,
        etcd=client,
        bind_host="127.0.0.1",
        grace=0.2,
        drain_delay=0.0,
    )
    await server.start()
    assert server.registration is not None
    await server.registration.wait_registered(10)
    await wait_until_reachable(stack)
    record.metadata.clear()
    record.requests.clear()
    record.remaining.clear()
    backend = EchoBackend(record, server)
    try:
        yield backend
    finally:
        if server.registration is not None and server.registration.registered:
            await server.stop()


@pytest.fixture
def echo_proto(tmp_path: Path) -> Path:
    (tmp_path / "echo.proto").write_text(ECHO_PROTO)
    return tmp_path


# --- listing and describing ------------------------------------------------------


def test_list_shows_every_service(stack):
    listed = grpcurl(stack, "list").stdout.split()

    assert set(listed) == {COUNTER_SERVICE, USER_SERVICE, *LOCAL_SERVICES}


@pytest.mark.parametrize(
    ("service", "methods"),
    [
        (COUNTER_SERVICE, ["Increment", "GetCounter", "ListCounters", "WatchCounter"]),
        (
            USER_SERVICE,
            [
                "CreateUser",
                "GetUser",
                "ListUsers",
                "Login",
                "ValidateSession",
                "Logout",
            ],
        ),
    ],
)
def test_describe_shows_every_method(stack, service, methods):
    described = grpcurl(stack, "describe", service).stdout

    assert f"{service} is a service" in described
    for method in methods:
        assert f"rpc {method} (" in described


def test_describe_message_of_user_service(stack):
    # LoginResponse refers to google.protobuf.Timestamp in another file.
    described = grpcurl(stack, "describe", "mesh.user.v1.LoginResponse").stdout

    assert "mesh.user.v1.LoginResponse is a message" in described
    assert "session_token" in described


def test_describe_local_reflection_v1(stack):
    described = grpcurl(stack, "describe", "grpc.reflection.v1.ServerReflection")

    assert "stream .grpc.reflection.v1.ServerReflectionRequest" in described.stdout


async def test_reflection_v1_lists_and_describes(stack, channel):
    # v1 and v1alpha messages are encoded alike, so v1alpha classes encode v1.
    info = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    call = info()

    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await call.read()
    await call.write(
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=COUNTER_SERVICE)
    )
    found = await call.read()
    await call.done_writing()

    names = {service.name for service in listed.list_services_response.service}
    assert names == {COUNTER_SERVICE, USER_SERVICE, *LOCAL_SERVICES}
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in found.file_descriptor_response.file_descriptor_proto
    ]
    services = [f"{f.package}.{s.name}" for f in files for s in f.service]
    assert COUNTER_SERVICE in services
    assert found.original_request.file_containing_symbol == COUNTER_SERVICE
    assert await call.code() == grpc.StatusCode.OK


async def test_reflection_unknown_symbol_is_not_found(stack, channel):
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="no.such.Symbol"
    )

    responses = [response async for response in info(iter([request]))]

    assert len(responses) == 1
    error = responses[0].error_response
    assert error.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "no.such.Symbol" in error.error_message


# --- calls ---------------------------------------------------------------------


def test_increment_with_json_request(stack):
    request = json.dumps({"name": "ingress-json", "delta": 2})
    method = f"{COUNTER_SERVICE}/Increment"

    first = grpcurl(stack, method, flags=("-d", request))
    second = grpcurl(stack, method, flags=("-v", "-d", request))

    # The JSON mapping of protobuf writes int64 values as strings.
    assert json.loads(first.stdout) == {
        "counter": {"name": "ingress-json", "value": "2"}
    }
    assert '"value": "4"' in second.stdout
    assert f"{INSTANCE_METADATA_KEY}: " in second.stdout


def test_backend_error_status_is_kept(stack):
    request = json.dumps({"name": "bad/name", "delta": 1})

    failed = grpcurl(
        stack, f"{COUNTER_SERVICE}/Increment", flags=("-d", request), check=False
    )

    assert failed.returncode != 0
    assert "InvalidArgument" in failed.stderr
    assert "name: must be 1 to 64 characters" in failed.stderr


def test_health_is_served_by_ingress(stack):
    overall = grpcurl(stack, "grpc.health.v1.Health/Check", flags=("-d", "{}"))
    counter = grpcurl(
        stack,
        "grpc.health.v1.Health/Check",
        flags=("-d", json.dumps({"service": COUNTER_SERVICE})),
    )

    assert json.loads(overall.stdout) == {"status": "SERVING"}
    assert json.loads(counter.stdout) == {"status": "SERVING"}


async def test_unknown_service_is_unimplemented(stack, channel):
    call = raw_unary(channel, "/nope.v1.Missing/Call")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"", timeout=5)

    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "nope.v1.Missing" in (caught.value.details() or "")


async def test_service_without_replica_is_unavailable(stack, channel, echo_backend):
    call = raw_unary(channel, f"/{ECHO_SERVICE}/Echo")
    assert await call(b"before", timeout=5) == b"before"

    await echo_backend.server.stop()
    deadline = time.monotonic() + 10
    details = ""
    while time.monotonic() < deadline and stack.config.namespace not in details:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"after", timeout=5)
        details = caught.value.details() or ""
        await asyncio.sleep(0.05)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ECHO_SERVICE in details
    assert repr(stack.config.namespace) in details


# --- raw bytes, metadata, deadlines and streams ----------------------------------


async def test_bytes_pass_through_undecoded(stack, channel, echo_backend):
    # Not a valid protobuf message: only a proxy that never decodes passes it.
    payload = b"\xff\xff\xff\xff not protobuf \x00"

    reply = await raw_unary(channel, f"/{ECHO_SERVICE}/Echo")(payload, timeout=5)

    assert reply == payload
    assert echo_backend.record.requests == [payload]


async def test_metadata_round_trip_with_grpcurl(stack, echo_backend, echo_proto):
    result = await grpcurl_async(
        stack,
        f"{ECHO_SERVICE}/Echo",
        flags=(
            "-import-path",
            str(echo_proto),
            "-proto",
            "echo.proto",
            "-v",
            "-H",
            "x-test: 1",
            "-d",
            json.dumps({"text": "hi"}),
        ),
    )

    assert result.returncode == 0, result.stderr
    seen = echo_backend.record.metadata[-1]
    assert seen["x-test"] == "1"
    assert not any(key.startswith(":") for key in seen)
    assert "x-backend-header: sent" in result.stdout
    assert "x-seen-test: 1" in result.stdout
    assert '"text": "hi"' in result.stdout


async def test_deadline_reaches_backend(stack, channel, echo_backend):
    slow = raw_unary(channel, f"/{ECHO_SERVICE}/Slow")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await slow(b"x", timeout=1.0)

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    [remaining] = echo_backend.record.remaining["Slow"]
    assert remaining is not None
    # gRPC rounds the grpc-timeout header up, so allow a margin, but far
    # below the 10 s that a mesh channel gives calls without a deadline.
    assert remaining < 2.0


async def test_call_without_deadline_gets_none(stack, channel, echo_backend):
    await raw_unary(channel, f"/{ECHO_SERVICE}/Echo")(b"x")

    assert echo_backend.record.remaining["Echo"] == [None]


async def test_grpcurl_max_time_gives_deadline_exceeded(
    stack, echo_backend, echo_proto
):
    failed = await grpcurl_async(
        stack,
        f"{ECHO_SERVICE}/Slow",
        flags=(
            "-import-path",
            str(echo_proto),
            "-proto",
            "echo.proto",
            "-max-time",
            "1",
            "-d",
            "{}",
        ),
    )

    assert failed.returncode != 0
    assert "DeadlineExceeded" in failed.stderr
    assert len(echo_backend.record.remaining["Slow"]) == 1


async def test_bidirectional_stream_alternates(stack, channel, echo_backend):
    call = channel.stream_stream(f"/{ECHO_SERVICE}/Chat")()

    replies = []
    for message in (b"\x01one", b"\x02two", b"\x03three"):
        # Each reply arrives before the next request is sent, so the
        # ingress must relay both directions at once.
        await call.write(message)
        replies.append(await call.read())
    await call.done_writing()

    assert replies == [b"\x01one", b"\x02two", b"\x03three"]
    assert await call.read() == grpc.aio.EOF  # type: ignore[attr-defined]
    assert await call.code() == grpc.StatusCode.OK
    assert len(echo_backend.record.remaining["Chat"]) == 1


# --- scaling under a watch -------------------------------------------------------


class JsonStream:
    """Decodes the JSON objects that grpcurl prints one after another."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._stream = stream
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                text = self._buffer.lstrip()
                if text:
                    with contextlib.suppress(json.JSONDecodeError):
                        value, end = self._decoder.raw_decode(text)
                        self._buffer = text[end:]
                        decoded: dict[str, Any] = value
                        return decoded
                chunk = await self._stream.read(4096)
                assert chunk, "grpcurl closed its output"
                self._buffer += chunk.decode()


@dataclass
class IncrementLoad:
    """Increments one counter through the ingress until stopped."""

    # A CounterServiceStub on a grpc.aio channel. It is typed Any because the
    # generated stubs are typed for sync calls.
    stub: Any
    name: str
    successes: int = 0
    failures: list[str] = field(default_factory=list)
    instances: set[str] = field(default_factory=set)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        request = counter_pb2.IncrementRequest(name=self.name, delta=1)
        while not self.stopped.is_set():
            call = self.stub.Increment(request, timeout=5)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")
            else:
                self.successes += 1
                trailers = dict(await call.trailing_metadata())
                self.instances.add(trailers[INSTANCE_METADATA_KEY])
            await asyncio.sleep(0.01)

    async def wait_for(self, predicate, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await asyncio.sleep(0.05)


def counter_value(message: dict[str, Any]) -> int:
    # The JSON mapping leaves out zero values.
    return int(message["counter"].get("value", "0"))


async def test_watch_follows_scaling_without_failed_call(stack, client, channel):
    name = "ingress-watch"
    # The watch starts while one replica runs, so it stays on the replica that
    # the test keeps. The added replicas take the increments.
    watch = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        "-d",
        json.dumps({"name": name}),
        stack.ingress.address,
        f"{COUNTER_SERVICE}/WatchCounter",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert watch.stdout is not None
    messages = JsonStream(watch.stdout)
    load = IncrementLoad(counter_pb2_grpc.CounterServiceStub(channel), name)
    try:
        values = [counter_value(await messages.next())]
        load_task = asyncio.create_task(load.run())
        added = await asyncio.gather(
            stack.processes.start(client, "counter_svc", COUNTER_SERVICE),
            stack.processes.start(client, "counter_svc", COUNTER_SERVICE),
        )
        new_ids = {replica.instance_id for replica in added}
        await load.wait_for(lambda state: new_ids <= state.instances)
        assert await asyncio.to_thread(added[0].stop) == 0
        after_stop = load.successes
        await load.wait_for(lambda state: state.successes >= after_stop + 30)
        load.stopped.set()
        await load_task
        while values[-1] < load.successes:
            values.append(counter_value(await messages.next()))
    finally:
        load.stopped.set()
        if watch.returncode is None:
            watch.send_signal(signal.SIGTERM)
        _, stderr = await watch.communicate()
        for replica in stack.processes.started[2:]:
            await asyncio.to_thread(replica.stop)

    assert load.failures == []
    assert new_ids <= load.instances
    assert values == list(range(load.successes + 1))
    # Still running when the test ended it: the watch never failed.
    assert watch.returncode == -signal.SIGTERM
    assert stderr == b""


async def test_stream_on_stopped_replica_says_call_again(stack, channel, echo_backend):
    call = channel.stream_stream(f"/{ECHO_SERVICE}/Chat")()
    await call.write(b"first")
    assert await call.read() == b"first"

    await echo_backend.server.stop()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "call again to reach another replica" in (caught.value.details() or "")
