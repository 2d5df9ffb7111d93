"""Password hashing with argon2id, run in worker threads.

One argon2 hash takes about a tenth of a second of CPU with the library
defaults, so hashing and verifying run in `asyncio.to_thread` and the event
loop keeps serving other calls meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

logger = logging.getLogger(__name__)


class Passwords:
    """Password hashing and verification in worker threads.

    `verify_dummy` verifies against a fixed hash. A login for an unknown user
    calls it, so that it takes as long as a login for a known user.
    """

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        # Computed once with the same parameters as real hashes, so verifying
        # against it takes as long as verifying a stored hash.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """Return True when password matches password_hash."""
        return await asyncio.to_thread(self._verify, password_hash, password)

    async def verify_dummy(self, password: str) -> bool:
        """Spend the time of one verification; always returns False."""
        await asyncio.to_thread(self._verify, self._dummy_hash, password)
        return False

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except InvalidHashError:
            logger.warning("stored password hash is not a valid argon2 hash")
            return False
        except VerificationError:
            # VerifyMismatchError, the usual wrong-password case, is a subclass.
            return False
