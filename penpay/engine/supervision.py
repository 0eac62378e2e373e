"""Supervision policy: how a crashed actor is restarted, and when it is parked."""

from __future__ import annotations

import msgspec


class SupervisionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """One-for-one restarts with exponential back-off and an intensity limit.

    After a crash the actor waits ``backoff_min_s * 2**(n-1)`` seconds (capped
    at ``backoff_max_s``), where ``n`` is the number of crashes inside the
    last ``window_s`` seconds, then restarts from its persisted state. The
    crash that makes ``n`` exceed ``max_restarts`` parks the actor instead:
    it answers every message with ``ActorParked`` until an operator clears it.
    """

    backoff_min_s: float = 0.1
    backoff_max_s: float = 10.0
    max_restarts: int = 5
    window_s: float = 60.0

    def backoff_s(self, recent_failures: int) -> float:
        exponent = max(recent_failures - 1, 0)
        return float(min(self.backoff_max_s, self.backoff_min_s * 2**exponent))
