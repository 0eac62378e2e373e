"""Argon2id password hashing off the event loop, with a cap on concurrent hashes.

Parameters are OWASP's ``m=19 MiB, t=2, p=1`` (reliability.md §3.7). A hash
takes tens of milliseconds of CPU and 19 MiB of memory, so it runs in a worker
thread (``trio.to_thread.run_sync``) under a :class:`trio.CapacityLimiter`:
at most ``hashes_concurrent_max`` at a time, which bounds memory and keeps a
login burst from starving the actors of the second core.

For an unknown e-mail, :meth:`Passwords.verify_dummy` does the same work
against a fixed hash, so the response time does not tell which e-mails exist.
"""

from __future__ import annotations

import argon2
import trio
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: OWASP Password Storage Cheat Sheet, Argon2id row 2.
OWASP_MEMORY_KIB = 19 * 1024
OWASP_TIME_COST = 2
OWASP_PARALLELISM = 1
HASHES_CONCURRENT_MAX = 2


def owasp_hasher() -> argon2.PasswordHasher:
    return argon2.PasswordHasher(
        time_cost=OWASP_TIME_COST,
        memory_cost=OWASP_MEMORY_KIB,
        parallelism=OWASP_PARALLELISM,
        type=argon2.Type.ID,
    )


class Passwords:
    """Hash and verify passwords; one instance per process (it owns the limiter)."""

    def __init__(
        self,
        hasher: argon2.PasswordHasher | None = None,
        *,
        hashes_concurrent_max: int = HASHES_CONCURRENT_MAX,
    ) -> None:
        self._hasher = hasher or owasp_hasher()
        self._hashes_concurrent_max = hashes_concurrent_max
        self._limiter: trio.CapacityLimiter | None = None
        self._dummy_hash: str | None = None

    def _capacity(self) -> trio.CapacityLimiter:
        if self._limiter is None:  # made lazily: it belongs to the running trio loop
            self._limiter = trio.CapacityLimiter(self._hashes_concurrent_max)
        return self._limiter

    async def hash(self, password: str) -> str:
        return await trio.to_thread.run_sync(
            self._hasher.hash, password, limiter=self._capacity()
        )

    async def verify(self, password_hash: str, password: str) -> bool:
        """True if ``password`` matches; False on mismatch or an unreadable hash."""

        def check() -> bool:
            try:
                return self._hasher.verify(password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await trio.to_thread.run_sync(check, limiter=self._capacity())

    async def verify_dummy(self, password: str) -> None:
        """Spend the time a real verification would, for an account that does not exist."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("penpay-dummy-password-for-timing")
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """The hash was made with other parameters: re-hash it after a successful login."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
