"""The nemesis: faults injected at random mock times while the workload runs.

Every kind can be switched off (``--faults``). All choices come from one
``random.Random`` derived from the seed, so the same seed injects the same
faults at the same mock times.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable

import trio

from penpay.sandbox.daraja import Endpoint
from penpay.sandbox.daraja import FaultKind as DarajaFault
from penpay.sandbox.deriv import FaultKind as DerivFault
from penpay.sim.world import SimWorld


class Fault(enum.StrEnum):
    ACTOR_CRASH = "actor_crash"  # transaction and ledger actors raise before/after a message
    SYSTEM_CRASH = "system_crash"  # the whole process dies; restart from the journal
    DERIV_DROP = "deriv_drop"  # the socket drops before or after Deriv applies a call
    DARAJA_ERROR = "daraja_error"  # HTTP 500s and timeouts (also after the money moved)
    CALLBACKS = "callbacks"  # customers whose callbacks are missing, doubled or late
    STORAGE = "storage"  # journal appends fail, or their acknowledgement is lost, for a few writes
    CLOCK = "clock"  # PenPay's wall clock jumps (NTP step)


ALL = frozenset(Fault)
#: Relative frequency of the faults the nemesis task injects.
WEIGHTS: dict[Fault, float] = {
    Fault.SYSTEM_CRASH: 1.0,
    Fault.DERIV_DROP: 3.0,
    Fault.DARAJA_ERROR: 3.0,
    Fault.STORAGE: 2.0,
    Fault.CLOCK: 1.0,
}
#: Consecutive failed journal appends per storage fault. Longer outages park
#: actors for good (see doc/testing.md, "findings"), which the liveness check
#: would then report on every seed.
STORAGE_FAILURES_MAX = 3
#: Per handled message, before and again after (see :mod:`penpay.sim.chaos`).
ACTOR_CRASH_P = 0.004


def parse_faults(text: str) -> frozenset[Fault]:
    """``all``, ``none`` or a comma-separated list of fault names."""
    text = text.strip().lower()
    if text in ("", "all"):
        return ALL
    if text == "none":
        return frozenset()
    return frozenset(Fault(part.strip()) for part in text.split(",") if part.strip())


class Nemesis:
    def __init__(self, world: SimWorld, faults: Iterable[Fault], mean_gap_s: float) -> None:
        self.world = world
        self.faults = frozenset(faults)
        self.rng = random.Random(f"{world.seed}-nemesis")
        self.mean_gap_s = mean_gap_s
        self.injected: dict[str, int] = {}
        self.active = True
        self.finished = trio.Event()
        self._nap: trio.CancelScope | None = None
        world.chaos.enabled = Fault.ACTOR_CRASH in self.faults
        world.chaos.probability = ACTOR_CRASH_P if world.chaos.enabled else 0.0

    async def run(self) -> None:
        try:
            kinds = [f for f in WEIGHTS if f in self.faults]
            weights = [WEIGHTS[f] for f in kinds]
            while self.active and kinds:
                with trio.CancelScope() as self._nap:
                    await trio.sleep(self.rng.expovariate(1 / self.mean_gap_s))
                if not self.active:
                    return
                fault = self.rng.choices(kinds, weights)[0]
                detail = await self.inject(fault)  # never interrupted half-way
                self.injected[fault.value] = self.injected.get(fault.value, 0) + 1
                self.world.trace.record("fault", fault.value, detail)
        finally:
            self.finished.set()

    async def inject(self, fault: Fault) -> str:
        rng, boxes = self.rng, self.world.boxes
        match fault:
            case Fault.SYSTEM_CRASH:
                down_s = rng.choice([0.0, 1.0, 30.0, 120.0])
                await self.world.crash()
                await trio.sleep(down_s)
                await self.world.boot()
                return f"down {down_s:g}s"
            case Fault.DERIV_DROP:
                call = rng.choice(["paymentagent_transfer", "paymentagent_withdraw", "statement"])
                drop = rng.choice([DerivFault.DROP_BEFORE_APPLY, DerivFault.DROP_AFTER_APPLY])
                boxes.deriv_world.inject_fault(call, drop, times=1)
                return f"{call} {drop.value}"
            case Fault.DARAJA_ERROR:
                endpoint = rng.choice([Endpoint.STK_PUSH, Endpoint.STK_QUERY, Endpoint.B2C,
                                       Endpoint.TRANSACTION_STATUS, Endpoint.OAUTH])
                kinds = [DarajaFault.HTTP_500, DarajaFault.TIMEOUT]
                if endpoint in (Endpoint.STK_PUSH, Endpoint.B2C):
                    kinds.append(DarajaFault.TIMEOUT_AFTER_ACCEPT)
                kind = rng.choice(kinds)
                boxes.daraja.inject_fault(endpoint, kind, count=rng.randint(1, 3))
                return f"{endpoint.value} {kind.value}"
            case Fault.STORAGE:
                left = [rng.randint(1, STORAGE_FAILURES_MAX)]
                journal = self.world.durable.journal

                def fail(_: str) -> bool:
                    if left[0] <= 0:
                        return False
                    left[0] -= 1
                    return True

                if rng.random() < 0.5:
                    journal.fail_appends = fail
                    return f"journal fails {left[0]} appends"
                journal.lose_acks = fail  # written, but the writer is told it failed
                return f"journal loses the acknowledgement of {left[0]} appends"
            case Fault.CLOCK:
                # An NTP step leaves the clock wrong by a new error (4 ms to
                # 262 s, either way), not by the sum of every error so far:
                # steps correct the clock as often as they upset it.
                error_s = rng.choice([-1, 1]) * 2 ** rng.uniform(2, 18) / 1000
                clock = self.world.clock
                step_s = error_s - clock.skew_s
                clock.skew(step_s)
                return f"step {step_s:+.3f}s, clock off by {error_s:+.3f}s"
        return ""

    def stop(self) -> None:
        """Faults stop so liveness can be judged (VOPR's liveness mode)."""
        self.active = False
        if self._nap is not None:
            self._nap.cancel()
        self.world.chaos.enabled = False
        self.world.durable.journal.fail_appends = None
        self.world.durable.journal.lose_acks = None
        self.world.boxes.daraja.clear_faults()
        self.world.boxes.deriv_world.clear_faults()
