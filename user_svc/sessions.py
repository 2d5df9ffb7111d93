"""Login sessions in etcd, each under its own lease so that etcd expires it.

A session lives under `<namespace>/data/user/sessions/<sha256 of the token>`.
The token itself is never stored or logged, so a reader of etcd cannot log
in with what it finds there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from registry.errors import EtcdRequestError
from registry.etcd import EtcdClient

logger = logging.getLogger(__name__)

DEFAULT_SESSION_TTL = 3600


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: its owner and when its lease expires."""

    username: str
    expire_time: datetime


def token_hash(token: str) -> str:
    """Return the hex SHA-256 of a session token, the only form that is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Sessions under `<namespace>/data/user/sessions/`, one lease each."""

    def __init__(self, etcd: EtcdClient, namespace: str, ttl: int) -> None:
        self._etcd = etcd
        self._prefix = f"{namespace}/data/user/sessions/"
        self.ttl = ttl

    def key(self, token: str) -> str:
        return self._prefix + token_hash(token)

    async def create(self, username: str) -> tuple[str, Session]:
        """Start a session and return its new token with the session."""
        token = secrets.token_urlsafe(32)
        lease_id, granted_ttl = await self._etcd.grant_lease(self.ttl)
        expire_time = datetime.now(UTC) + timedelta(seconds=granted_ttl)
        body = {"username": username, "expire_time": expire_time.isoformat()}
        try:
            await self._etcd.put(self.key(token), json.dumps(body), lease=lease_id)
        except BaseException:
            await self._revoke_quietly(lease_id)
            raise
        logger.info(
            "session started username=%s session=%s ttl=%d",
            username,
            _short(token),
            granted_ttl,
        )
        return token, Session(username, expire_time)

    async def get(self, token: str) -> Session | None:
        """Return the live session of token, or None when it is unknown or expired."""
        kv = await self._etcd.get(self.key(token))
        if kv is None:
            return None
        body = json.loads(kv.value)
        session = Session(
            str(body["username"]), datetime.fromisoformat(body["expire_time"])
        )
        # etcd deletes the key when the lease expires, which may be a moment
        # after expire_time; the session counts as ended from expire_time on.
        if session.expire_time <= datetime.now(UTC):
            return None
        return session

    async def delete(self, token: str) -> bool:
        """End a session and return False when there was none."""
        kv = await self._etcd.get(self.key(token))
        if kv is None:
            return False
        await self._etcd.delete(kv.key)
        if kv.lease:
            await self._revoke_quietly(kv.lease)
        logger.info("session ended session=%s", _short(token))
        return True

    async def _revoke_quietly(self, lease_id: int) -> None:
        # The lease may have expired already, which etcd reports as an error.
        with contextlib.suppress(EtcdRequestError):
            await self._etcd.revoke_lease(lease_id)


def _short(token: str) -> str:
    """Return a log-safe session id: the first 12 hex digits of the token hash."""
    return token_hash(token)[:12]
