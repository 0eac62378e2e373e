"""A token bucket on trio time, to stay under Deriv's per-connection call budget.

Deriv allows 220 non-ping calls per minute per connection (protocols.md
§2.11) and counts them over a window, so a bucket of ``burst`` tokens
refilled at ``per_minute / 60`` per second can never send more than
``burst + per_minute`` calls in any 60 s: the defaults (200/min, burst 10)
keep 10 calls of headroom below 220.
"""

from __future__ import annotations

import trio

_EPSILON = 1e-9


class TokenBucket:
    """FIFO-fair: waiters are served in arrival order (a ``trio.Lock`` is fair)."""

    def __init__(self, per_minute: int, burst: int) -> None:
        if per_minute < 1 or burst < 1:
            raise ValueError("per_minute and burst must be >= 1")
        self.rate_per_s = per_minute / 60.0
        self.burst = burst
        self._tokens = float(burst)
        self._stamp: float | None = None
        self._lock = trio.Lock()

    def _refill(self) -> None:
        now = trio.current_time()
        if self._stamp is None:
            self._stamp = now
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    def take_now(self) -> None:
        """Take one token at once, ahead of every waiter, borrowing if none is left.

        For the calls that open a connection (authorize, subscribe): queued
        behind ordinary calls they could wait longer than Deriv keeps an idle
        socket open, and the socket would never come up. The borrowed token
        is repaid by the waiters (they wait until the balance is positive
        again), so the budget over any minute still holds.
        """
        self._refill()
        self._tokens -= 1.0

    async def acquire(self) -> None:
        """Take one token, sleeping (on trio's clock) until one is available."""
        async with self._lock:
            self._refill()
            while self._tokens < 1.0 - _EPSILON:
                # at least 1 ms: float rounding must not turn this into a busy loop
                await trio.sleep(max((1.0 - self._tokens) / self.rate_per_s, 1e-3))
                self._refill()
            self._tokens = max(self._tokens - 1.0, 0.0)
