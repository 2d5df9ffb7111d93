"""Users in etcd, one JSON record per user under `<namespace>/data/user/users/`."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from registry.etcd import EtcdClient, compare_absent, op_put
from user_svc.errors import AlreadyExistsError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A stored user. create_time is RFC 3339 text in UTC."""

    username: str
    display_name: str
    password_hash: str
    create_time: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> UserRecord:
        """Parse a stored record, raising ValueError when it is malformed."""
        try:
            body = json.loads(raw)
            return cls(
                username=str(body["username"]),
                display_name=str(body["display_name"]),
                password_hash=str(body["password_hash"]),
                create_time=str(body["create_time"]),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"malformed user record: {exc}") from exc


class UserStore:
    """User storage in etcd. Creation is atomic, so two calls cannot both take a username."""

    def __init__(self, etcd: EtcdClient, namespace: str) -> None:
        self._etcd = etcd
        self._prefix = f"{namespace}/data/user/users/"

    def key(self, username: str) -> str:
        return self._prefix + username

    async def exists(self, username: str) -> bool:
        return await self._etcd.get(self.key(username)) is not None

    async def create(self, record: UserRecord) -> None:
        """Store a new user, or raise AlreadyExistsError when the username is taken."""
        key = self.key(record.username)
        result = await self._etcd.txn(
            [compare_absent(key)], [op_put(key, record.encode())]
        )
        if not result.succeeded:
            raise taken_error(record.username)
        logger.info("user created username=%s", record.username)

    async def get(self, username: str) -> UserRecord | None:
        kv = await self._etcd.get(self.key(username))
        return None if kv is None else UserRecord.decode(kv.value)

    async def list_page(
        self, after: str | None, limit: int
    ) -> tuple[list[UserRecord], bool]:
        """Return up to limit users named after `after`, in username order,
        and whether more users follow."""
        start_key = self.key(after) + "\x00" if after is not None else None
        kvs, _ = await self._etcd.get_prefix(
            self._prefix, start_key=start_key, limit=limit + 1
        )
        users = [UserRecord.decode(kv.value) for kv in kvs[:limit]]
        return users, len(kvs) > limit


def taken_error(username: str) -> AlreadyExistsError:
    return AlreadyExistsError(
        "username", f"{username!r} is taken; choose another username"
    )
