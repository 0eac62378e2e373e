"""A circuit breaker so a dead Daraja fails fast instead of queueing money.

Closed: calls go through; ``failure_threshold`` consecutive failures open it.
Open: every call raises :class:`DarajaUnavailable` at once, for
``cooldown_s`` seconds of trio time. Half-open: exactly one trial call is let
through; its success closes the breaker, its failure re-opens it. Calls that
end without a verdict (cancelled) just free the trial slot.

What counts as a failure is the caller's call (:class:`Attempt`): timeouts,
connection errors and Daraja internal errors do; a clear business rejection
does not, since it proves Daraja is up.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from penpay.actors.daraja.errors import DarajaUnavailable


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Attempt:
    """The verdict on one guarded call; unset means "no verdict"."""

    __slots__ = ("verdict",)

    def __init__(self) -> None:
        self.verdict: bool | None = None

    def success(self) -> None:
        self.verdict = True

    def failure(self) -> None:
        self.verdict = False


class CircuitBreaker:
    """Consecutive-failure breaker on trio's clock."""

    def __init__(self, *, failure_threshold: int = 5, cooldown_s: float = 30.0) -> None:
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_s > 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if trio.current_time() - self._opened_at < self.cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @property
    def is_open(self) -> bool:
        """True while calls are refused outright (for readiness probes)."""
        return self.state is BreakerState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @contextmanager
    def guard(self) -> Iterator[Attempt]:
        """Admit one call or raise :class:`DarajaUnavailable`; record its verdict."""
        state = self.state
        if state is BreakerState.OPEN:
            raise DarajaUnavailable(
                f"Daraja circuit open after {self._failures} consecutive failures; "
                "retry after the cool-down"
            )
        trial = state is BreakerState.HALF_OPEN
        if trial:
            if self._trial_in_flight:
                raise DarajaUnavailable("Daraja circuit half-open: a trial call is in flight")
            self._trial_in_flight = True
        attempt = Attempt()
        try:
            yield attempt
        finally:
            if trial:
                self._trial_in_flight = False
            if attempt.verdict is True:
                self._failures = 0
                self._opened_at = None
            elif attempt.verdict is False:
                self._failures += 1
                if trial or self._failures >= self.failure_threshold:
                    self._opened_at = trio.current_time()
