"""Replica counts of `meshctl up`, stored in etcd and applied by its supervisor.

Keys under the mesh namespace:

    <namespace>/control/replicas/<group>   desired count as a decimal, e.g. "3"
    <namespace>/control/supervisor         JSON record of the running `meshctl up`

`meshctl up` writes the supervisor key under a lease of its own, so the key
disappears within one lease TTL after that process dies, and writes its
start counts. `meshctl scale` writes new counts. The controller here lists
and watches the replicas prefix, and starts or retires children until each
group runs its count. A retired service drains before it exits (see
`registry.serve.MeshServer.stop`), so calls in flight finish.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry.backoff import Backoff
from registry.cli_common import COUNTER_SERVICE, USER_SERVICE
from registry.errors import MeshError
from registry.etcd import compare_absent, op_get, op_put
from registry.supervisor import ChildSpec, ChildState, Supervisor, SupervisorError

if TYPE_CHECKING:
    from registry.config import MeshConfig
    from registry.etcd import EtcdClient, KeyValue
    from registry.supervisor import Child

logger = logging.getLogger(__name__)

# Upper bound on the replicas of one group, a policy choice. An idle replica
# is a Python process of about 50 MB resident (counter_svc and user_svc on
# CPython 3.11, x86-64), so 64 of them already take over 3 GB.
MAX_REPLICAS = 64
# Seconds between full reads of the replicas prefix, in case a watch stream
# stops delivering events without an error.
RESYNC_INTERVAL = 10.0


@dataclass(frozen=True)
class ReplicaGroup:
    """A service that `meshctl up` runs as a set of replicas."""

    # The module to run with `python -m`, also the key under replicas/.
    name: str
    # The full proto name of the service that the module serves.
    service: str
    # Children are named <child_prefix>-1, <child_prefix>-2, ...
    child_prefix: str


GROUPS = {
    group.name: group
    for group in (
        ReplicaGroup("counter_svc", COUNTER_SERVICE, "counter"),
        ReplicaGroup("user_svc", USER_SERVICE, "user"),
    )
}

# Every name that `meshctl scale` accepts for a group.
_GROUP_NAMES = {
    name: group
    for group in GROUPS.values()
    for name in (group.name, group.child_prefix, group.service)
}

SpecFactory = Callable[[ReplicaGroup, int], ChildSpec]
Reporter = Callable[[str], None]


def find_group(name: str) -> ReplicaGroup | None:
    """Return the group for a module name, a short name or a proto name."""
    return _GROUP_NAMES.get(name.strip())


def parse_replica_count(raw: str) -> int:
    """Parse a replica count from 0 to MAX_REPLICAS, or raise ValueError."""
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_REPLICAS:
        msg = f"invalid replica count {raw!r}: use a whole number from 0 to {MAX_REPLICAS}"
        raise ValueError(msg)
    return int(text)


def control_prefix(config: MeshConfig) -> str:
    return f"{config.namespace}/control/"


def replicas_prefix(config: MeshConfig) -> str:
    return f"{control_prefix(config)}replicas/"


def supervisor_key(config: MeshConfig) -> str:
    return f"{control_prefix(config)}supervisor"


@dataclass(frozen=True)
class SupervisorRecord:
    """The value of the supervisor key: the `meshctl up` process that owns it."""

    pid: int
    host: str
    started: float

    @classmethod
    def current(cls) -> SupervisorRecord:
        return cls(os.getpid(), socket.gethostname(), time.time())

    @classmethod
    def decode(cls, value: bytes) -> SupervisorRecord | None:
        """Parse a stored value, or return None when it is not a record."""
        try:
            body = json.loads(value)
            return cls(int(body["pid"]), str(body["host"]), float(body["started"]))
        except (ValueError, TypeError, KeyError):
            return None

    def encode(self) -> bytes:
        body = {"pid": self.pid, "host": self.host, "started": self.started}
        return json.dumps(body, separators=(",", ":")).encode()

    def describe(self) -> str:
        return f"meshctl up (pid {self.pid} on {self.host})"


def describe_holder(value: bytes) -> str:
    record = SupervisorRecord.decode(value)
    return record.describe() if record else "another process"


class ReplicaController:
    """Applies the stored replica counts to the children of one supervisor."""

    def __init__(
        self,
        client: EtcdClient,
        config: MeshConfig,
        supervisor: Supervisor,
        make_spec: SpecFactory,
        report: Reporter,
    ) -> None:
        self._client = client
        self._config = config
        self._supervisor = supervisor
        self._make_spec = make_spec
        self._report = report
        self._desired: dict[str, int] = {}
        self._rejected: dict[str, bytes] = {}
        self._lock = asyncio.Lock()
        self._lease = 0
        self._record = SupervisorRecord.current()

    async def claim(self, counts: Mapping[str, int]) -> None:
        """Write the supervisor key under a new lease, and the start counts.

        Raises SupervisorError when another `meshctl up` owns the key, because
        two supervisors would each run the full count.
        """
        self._lease, _ = await self._client.grant_lease(self._config.lease_ttl)
        key = supervisor_key(self._config)
        puts = [op_put(key, self._record.encode(), lease=self._lease)]
        puts += [
            op_put(replicas_prefix(self._config) + name, str(count))
            for name, count in counts.items()
        ]
        try:
            result = await self._client.txn([compare_absent(key)], puts, [op_get(key)])
        except MeshError:
            await self.release()
            raise
        if result.succeeded:
            return
        await self.release()
        holder = result.ranges[0][0].value if result.ranges[0] else b""
        msg = (
            f"{describe_holder(holder)} already supervises namespace "
            f"{self._config.namespace!r}. Stop it first, or choose another "
            f"namespace with --namespace. The key {key} of a killed meshctl up "
            f"expires within {self._config.lease_ttl} s."
        )
        raise SupervisorError(msg)

    async def release(self) -> None:
        """Revoke the lease, which deletes the supervisor key."""
        lease, self._lease = self._lease, 0
        if not lease:
            return
        try:
            await self._client.revoke_lease(lease)
        except MeshError as exc:
            logger.warning(
                "revoking lease %x failed, so the supervisor key stays until it expires: %s",
                lease,
                exc,
            )

    async def run(self) -> None:
        """Keep the lease alive and apply every count change, until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._keep_lease())
            tasks.create_task(self._watch_counts())
            tasks.create_task(self._resync())

    # --- desired counts ------------------------------------------------------

    async def _watch_counts(self) -> None:
        prefix = replicas_prefix(self._config)
        backoff = Backoff(initial=0.5, maximum=5.0)
        while True:
            try:
                revision = await self._read_counts()
                watch = self._client.watch_prefix(prefix, start_revision=revision + 1)
                async for batch in watch:
                    backoff.reset()
                    for event in batch.events:
                        self._store(event.kv, deleted=event.kind == "delete")
                    if batch.events:
                        await self.converge()
            except MeshError as exc:
                delay = backoff.next_delay()
                logger.warning(
                    "watch on %s failed; listing again in %.1f s: %s",
                    prefix,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_INTERVAL)
            try:
                await self._read_counts()
            except MeshError as exc:
                # The watch loop reports etcd errors; this read tries again later.
                logger.debug("periodic read of the replica counts failed: %s", exc)

    async def _read_counts(self) -> int:
        """List the replicas prefix, apply it and return its revision."""
        kvs, revision = await self._client.get_prefix(replicas_prefix(self._config))
        listed = {kv.key for kv in kvs}
        for group in GROUPS.values():
            if replicas_prefix(self._config) + group.name not in listed:
                self._desired.pop(group.name, None)
        for kv in kvs:
            self._store(kv, deleted=False)
        await self.converge()
        return revision

    def _store(self, kv: KeyValue, *, deleted: bool) -> None:
        name = kv.key.removeprefix(replicas_prefix(self._config))
        if name not in GROUPS:
            logger.info("ignoring %s: no replica group is named %r", kv.key, name)
            return
        if deleted:
            # Without a stored count the group keeps the replicas it runs.
            self._desired.pop(name, None)
            return
        try:
            self._desired[name] = parse_replica_count(kv.value.decode(errors="replace"))
        except ValueError as exc:
            if self._rejected.get(name) != kv.value:
                self._report(
                    f"ignoring {kv.key}: {exc}. Set it with meshctl scale {name}=N"
                )
            self._rejected[name] = kv.value
        else:
            self._rejected.pop(name, None)

    # --- convergence ---------------------------------------------------------

    async def converge(self) -> None:
        """Start or retire children until every group runs its stored count."""
        async with self._lock:
            for name, desired in sorted(self._desired.items()):
                if self._supervisor.stopping:
                    return
                await self._converge_group(GROUPS[name], desired)

    async def _converge_group(self, group: ReplicaGroup, desired: int) -> None:
        members = self.members(group)
        if len(members) < desired:
            started = await self._start(group, desired - len(members))
            self._report(
                f"scaling {group.name} from {len(members)} to {desired} replicas: "
                f"started {', '.join(started) or 'nothing'}"
            )
        elif len(members) > desired:
            surplus = _retire_order(members)[: len(members) - desired]
            for child in surplus:
                self._supervisor.retire(child.spec.name)
            names = ", ".join(child.spec.name for child in surplus)
            self._report(
                f"scaling {group.name} from {len(members)} to {desired} replicas: "
                f"stopping {names} (each drains first)"
            )

    def members(self, group: ReplicaGroup) -> list[Child]:
        """Return the children of a group that are not being retired."""
        return [
            child
            for child in self._supervisor.children
            if child.spec.group == group.name and not child.retiring
        ]

    async def _start(self, group: ReplicaGroup, count: int) -> list[str]:
        used_names = {child.spec.name for child in self._supervisor.children}
        started: list[str] = []
        index = 0
        while len(started) < count:
            index += 1
            spec = self._make_spec(group, index)
            if spec.name in used_names:
                continue
            try:
                await self._supervisor.add(spec)
            except SupervisorError as exc:
                self._report(f"{exc}. {group.name} runs fewer replicas than requested")
                break
            started.append(spec.name)
        return started

    # --- supervisor lease ----------------------------------------------------

    async def _keep_lease(self) -> None:
        """Refresh the lease at a third of its TTL, and claim anew if it is lost."""
        interval = max(self._config.lease_ttl / 3, 0.5)
        retry = Backoff(initial=0.2, maximum=interval)
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                left = await self._client.refresh_lease(self._lease, timeout=interval)
                if left <= 0:
                    await self._renew_lease()
            except MeshError as exc:
                delay = retry.next_delay()
                logger.warning("supervisor lease refresh failed: %s", exc)
                continue
            retry.reset()
            delay = interval

    async def _renew_lease(self) -> None:
        # etcd dropped the lease (it expired during an outage, or etcd lost
        # its data), and the supervisor key went with it.
        self._lease, _ = await self._client.grant_lease(self._config.lease_ttl)
        await self._client.put(
            supervisor_key(self._config), self._record.encode(), lease=self._lease
        )
        logger.warning(
            "supervisor lease was lost, so the supervisor key was written again "
            "under lease %x",
            self._lease,
        )


def _retire_order(members: list[Child]) -> list[Child]:
    """Return the children to stop first: those not running, then the newest."""
    newest_first = list(reversed(members))
    return sorted(newest_first, key=lambda child: child.state is ChildState.RUNNING)
