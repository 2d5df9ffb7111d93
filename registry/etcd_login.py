"""The etcd auth token of one client: log in, and log in again when it expires.

etcd's simple tokens (`--auth-token=simple`) expire after `--auth-token-ttl`
seconds without use, and every token becomes invalid when the auth store
changes (a user or role is added). A long-running process therefore cannot
keep one token: a request that etcd rejects for its token logs in again and
runs once more (see EtcdClient in registry.etcd).

Many requests fail at once when a token expires. Only the first one logs in:
the others see that the token changed since they sent their request, and
simply retry with the new one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from registry.etcd_security import EtcdSecurity

logger = logging.getLogger(__name__)

Authenticate = Callable[[str, str], Awaitable[str]]
SetToken = Callable[[str | None], None]


class EtcdLogin:
    """The login of one etcd client and the generation of its token."""

    def __init__(
        self, security: EtcdSecurity, authenticate: Authenticate, set_token: SetToken
    ) -> None:
        self._security = security
        self._authenticate = authenticate
        self._set_token = set_token
        self._lock = asyncio.Lock()
        # Bumped on every new token. A request remembers the value it used.
        self.generation = 0
        self.logins = 0

    @property
    def enabled(self) -> bool:
        return self._security.login

    @property
    def user(self) -> str | None:
        return self._security.user

    async def authenticate(self) -> None:
        """Log in and send the new token with every later request."""
        user = self._security.user
        if user is None:
            return
        async with self._lock:
            await self._login(user)

    async def renew(self, used_generation: int) -> None:
        """Log in again unless another request already did since used_generation."""
        user = self._security.user
        if user is None:
            return
        async with self._lock:
            if self.generation != used_generation:
                return
            logger.info(
                "etcd rejected the auth token of user %r; logging in again", user
            )
            await self._login(user)

    async def _login(self, user: str) -> None:
        token = await self._authenticate(user, self._security.read_password())
        self._set_token(token)
        self.generation += 1
        self.logins += 1
