"""One cached OAuth token, minted by one task at a time.

Daraja invalidates the previous token whenever a new one is minted
(protocols.md 1.2), so two concurrent refreshes would knock each other out.
A ``trio.Lock`` serialises minting, and :meth:`TokenCache.refresh` only mints
if the token the caller saw rejected is still the current one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

# Refresh this long before Daraja's stated expiry even if refresh_after_s is later.
_EXPIRY_MARGIN_S = 60.0


class TokenCache:
    """Holds the current token and when it must be replaced (trio time)."""

    def __init__(
        self, mint: Callable[[], Awaitable[tuple[str, int]]], *, refresh_after_s: float
    ) -> None:
        self._mint = mint
        self._refresh_after_s = refresh_after_s
        self._lock = trio.Lock()
        self._token: str | None = None
        self._replace_at = 0.0
        self.mints = 0  # how many tokens this cache obtained (observability)

    def _fresh(self) -> bool:
        return self._token is not None and trio.current_time() < self._replace_at

    async def get(self) -> str:
        """The current token, minting one if there is none or it is due."""
        if self._fresh():
            assert self._token is not None
            return self._token
        async with self._lock:
            if not self._fresh():
                await self._mint_locked()
            assert self._token is not None
            return self._token

    async def refresh(self, rejected: str) -> str:
        """Daraja rejected ``rejected``: replace it, unless another task already did."""
        async with self._lock:
            if self._token != rejected and self._fresh():
                assert self._token is not None
                return self._token
            await self._mint_locked()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        self._token = None

    async def _mint_locked(self) -> None:
        token, expires_in_s = await self._mint()
        lifetime = min(self._refresh_after_s, max(expires_in_s - _EXPIRY_MARGIN_S, 1.0))
        self._token = token
        self._replace_at = trio.current_time() + lifetime
        self.mints += 1
