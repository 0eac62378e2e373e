"""The one clock and the one source of randomness.

All time in PenPay comes from :class:`Clock`: monotonic time is trio's clock
(so ``trio.testing.MockClock`` drives it), and wall-clock time is trio time
plus a fixed anchor taken once. Under a mock clock both are deterministic.
All randomness comes from :class:`Entropy`: seeded in tests and simulations,
the operating system's CSPRNG in production.
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

import trio


class Clock:
    """Monotonic and wall-clock time derived from trio's clock.

    ``wall_anchor`` is the wall-clock time that corresponds to the first
    reading of trio time; pass a fixed value for deterministic runs. The
    anchor is taken lazily, inside ``trio.run``, on first use.
    """

    def __init__(self, wall_anchor: datetime | None = None) -> None:
        if wall_anchor is not None and wall_anchor.tzinfo is None:
            raise ValueError("wall_anchor must be timezone-aware")
        self._wall_anchor = wall_anchor
        self._trio_anchor: float | None = None
        self._skew_s = 0.0

    def monotonic(self) -> float:
        """Seconds on trio's clock; use for deadlines and durations."""
        return trio.current_time()

    def _anchor(self) -> tuple[datetime, float]:
        if self._trio_anchor is None:
            self._trio_anchor = trio.current_time()
            if self._wall_anchor is None:
                self._wall_anchor = datetime.now(UTC)
        assert self._wall_anchor is not None
        return self._wall_anchor, self._trio_anchor

    def now(self) -> datetime:
        """The current UTC wall-clock time."""
        wall, base = self._anchor()
        return wall + timedelta(seconds=trio.current_time() - base + self._skew_s)

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, UTC."""
        return int(self.now().timestamp() * 1000)

    def skew(self, seconds: float) -> None:
        """Move the wall clock (not the monotonic clock); simulates an NTP step."""
        self._skew_s += seconds

    @property
    def skew_s(self) -> float:
        """How far :meth:`skew` has moved the wall clock so far."""
        return self._skew_s


class _UrandomPool:
    """Bytes of ``os.urandom``, read a page at a time and handed out once each.

    Why: ``os.urandom`` releases the GIL, so every id minted on the trio
    thread was a point where the database driver's thread could take the GIL
    and keep it for a whole switch interval. Buffering changes nothing about
    the bytes (they are the kernel CSPRNG's, each given out once, under a
    lock for callers on worker threads); a forked child starts an empty pool
    so parent and child never share bytes.
    """

    PAGE_BYTES = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._page = b""
        self._offset = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._page, self._offset = b"", 0

    def take(self, n: int) -> bytes:
        if n > self.PAGE_BYTES:
            return os.urandom(n)
        with self._lock:
            if self._offset + n > len(self._page):
                self._page, self._offset = os.urandom(self.PAGE_BYTES), 0
            out = self._page[self._offset : self._offset + n]
            self._offset += n
            return out


_SYSTEM_POOL = _UrandomPool()


class Entropy:
    """Randomness and identifiers.

    With a seed, every value is reproducible (tests, simulation). Without one,
    values come from the kernel's CSPRNG (``os.urandom``, as :mod:`secrets`
    uses), which is what tokens and keys need.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seeded = seed is not None
        self.random: random.Random = (
            random.Random(seed) if seed is not None else random.SystemRandom()
        )

    def token_bytes(self, n: int) -> bytes:
        if self.seeded:
            return self.random.getrandbits(8 * n).to_bytes(n, "big")
        return _SYSTEM_POOL.take(n)

    def token_urlsafe(self, n: int = 32) -> str:
        """A URL-safe random token of ``n`` bytes of entropy."""
        import base64

        return base64.urlsafe_b64encode(self.token_bytes(n)).rstrip(b"=").decode("ascii")

    def uuid7(self, unix_ms: int) -> uuid.UUID:
        """A UUIDv7 (RFC 9562): 48-bit millisecond timestamp, then random bits."""
        rand = int.from_bytes(self.token_bytes(10), "big")  # 80 bits, 74 used
        rand_a = rand >> 68 & 0xFFF
        rand_b = rand & ((1 << 62) - 1)
        value = (unix_ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
        return uuid.UUID(int=value)
