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

    @classmethod
    def persistent(cls, backoff_max_s: float = 10.0) -> SupervisionPolicy:
        """For actors whose absence halts the business (ledger accounts, transactions).

        A storage outage makes them fail repeatedly; parking them would stop
        every payment until an operator steps in. Instead they retry with
        back-off (at most one restart per ``backoff_max_s`` once it has grown),
        and their restart count stays visible to operators. A corrupt journal
        still parks at once: restarting cannot fix that.
        """
        return cls(backoff_min_s=0.1, backoff_max_s=backoff_max_s, max_restarts=100_000,
                   window_s=60.0)
