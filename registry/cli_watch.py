"""`meshctl watch`: a live stream of instances added, removed and updated.

The command lists the prefix, prints each instance found as "added", then
watches from the listed revision + 1. It keeps the decoded state by key, so a
delete, which carries no value, still names the instance and address removed.
When etcd has compacted the revision to resume from, it lists again and
prints the difference against that state.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from registry.backoff import Backoff
from registry.cli_common import (
    decode_key_value,
    echo,
    list_endpoints,
    open_etcd,
    run_until_signal,
    until_stopped,
    warn,
    watched_prefix,
)
from registry.errors import MeshError, RevisionCompactedError
from registry.model import RecordError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from registry.config import MeshConfig
    from registry.etcd import EtcdClient, WatchBatch
    from registry.model import Endpoint

ChangeKind = Literal["added", "removed", "updated"]

_SYMBOLS: dict[ChangeKind, str] = {"added": "+", "removed": "-", "updated": "~"}


@dataclass(frozen=True, slots=True)
class Change:
    """One change of an instance, at the etcd revision that made it."""

    kind: ChangeKind
    endpoint: Endpoint
    revision: int

    def to_line(self) -> str:
        endpoint = self.endpoint
        return (
            f"{_SYMBOLS[self.kind]} {self.kind:<8} {endpoint.service}  "
            f"{endpoint.instance_id}  {endpoint.address}  rev={self.revision}"
        )

    def to_json(self) -> str:
        endpoint = self.endpoint
        body = {
            "event": self.kind,
            "service": endpoint.service,
            "instance_id": endpoint.instance_id,
            "address": endpoint.address,
            "version": endpoint.info.version,
            "zone": endpoint.info.zone,
            "key": endpoint.key,
            "revision": self.revision,
        }
        return json.dumps(body, separators=(",", ":"))


def diff_states(
    old: Mapping[str, Endpoint], new: Mapping[str, Endpoint], revision: int
) -> list[Change]:
    """Return the changes that turn the old state by key into the new one."""
    changes = [
        Change("removed", endpoint, revision)
        for key, endpoint in old.items()
        if key not in new
    ]
    for key, endpoint in new.items():
        previous = old.get(key)
        if previous is None:
            changes.append(Change("added", endpoint, revision))
        elif previous != endpoint:
            changes.append(Change("updated", endpoint, revision))
    return changes


def apply_batch(
    config: MeshConfig, state: dict[str, Endpoint], batch: WatchBatch
) -> list[Change]:
    """Apply one watch batch to the state by key and return its changes.

    A value that no longer decodes removes its instance, with a warning.
    """
    changes: list[Change] = []
    for event in batch.events:
        key = event.kv.key
        # The key of a put or a delete event carries the revision of that event.
        revision = event.kv.mod_revision or batch.revision
        previous = state.pop(key, None)
        if event.kind == "delete":
            if previous is not None:
                changes.append(Change("removed", previous, revision))
            continue
        try:
            endpoint = decode_key_value(config, event.kv)
        except RecordError as exc:
            warn(f"skipping {key}: {exc}")
            if previous is not None:
                changes.append(Change("removed", previous, revision))
            continue
        state[key] = endpoint
        kind: ChangeKind = "added" if previous is None else "updated"
        changes.append(Change(kind, endpoint, revision))
    return changes


class Watcher:
    """Lists and watches one prefix, printing every change."""

    def __init__(
        self, client: EtcdClient, config: MeshConfig, prefix: str, *, as_json: bool
    ) -> None:
        self._client = client
        self._config = config
        self._prefix = prefix
        self._as_json = as_json
        self._state: dict[str, Endpoint] = {}
        self._revision = 0

    async def list_and_print(self) -> None:
        """List the prefix and print each instance as added, in revision order."""
        self._state, self._revision = await list_endpoints(
            self._client, self._config, self._prefix
        )
        listed = sorted(self._state.values(), key=lambda e: (e.mod_revision, e.key))
        for endpoint in listed:
            self._print(Change("added", endpoint, endpoint.mod_revision))

    async def follow(self) -> None:
        """Print changes until cancelled, resuming after etcd errors."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            try:
                await self._watch()
            except RevisionCompactedError as exc:
                warn(
                    f"revision {self._revision + 1} is compacted ({exc}); listing again"
                )
                await self._relist()
            except MeshError as exc:
                delay = backoff.next_delay()
                warn(
                    f"watch on {self._prefix} failed; retrying in {delay:.1f} s: {exc}"
                )
                await asyncio.sleep(delay)
            else:
                backoff.reset()

    async def _watch(self) -> None:
        stream = self._client.watch_prefix(
            self._prefix, start_revision=self._revision + 1
        )
        async for batch in stream:
            for change in apply_batch(self._config, self._state, batch):
                self._print(change)
            self._revision = max(self._revision, batch.revision)

    async def _relist(self) -> None:
        fresh, revision = await list_endpoints(self._client, self._config, self._prefix)
        for change in diff_states(self._state, fresh, revision):
            self._print(change)
        self._state = fresh
        self._revision = revision

    def _print(self, change: Change) -> None:
        line = change.to_json() if self._as_json else change.to_line()
        echo(line)


async def run_watch(config: MeshConfig, service: str | None, *, as_json: bool) -> int:
    prefix = watched_prefix(config, service)

    async def watch(stop: asyncio.Event) -> int:
        async with open_etcd(config) as client:
            watcher = Watcher(client, config, prefix, as_json=as_json)
            # An unreachable etcd at the start is an error. Later the watch
            # retries, because a watcher should outlive an etcd restart.
            await until_stopped(watcher.list_and_print(), stop)
            if stop.is_set():
                return 0
            warn(f"watching {prefix}; press Ctrl-C to stop")
            await until_stopped(watcher.follow(), stop)
        return 0

    return await run_until_signal(watch)
