"""One simulation run: world, workload, nemesis and checker in a single ``trio.run``.

Phases: boot the world; run the workload while the nemesis injects faults
and the checker samples the continuous invariants; stop the faults; let
mock time run on (liveness); check everything; stop. The result carries the
trace hash, so the same seed can be shown to give the same run.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from penpay.engine import ActorStatus
from penpay.engine.testing import settle
from penpay.sim.chaos import Chaos
from penpay.sim.determinism import seed_trio_scheduler, sim_clock
from penpay.sim.faults import ALL, Fault, Nemesis
from penpay.sim.findings import KNOWN_FINDINGS
from penpay.sim.invariants import Checker, Violation
from penpay.sim.trace import Trace
from penpay.sim.workload import Stats, run_workload
from penpay.sim.world import SimWorld

#: Mock time allowed after faults stop before anything unfinished counts as stuck.
LIVENESS_S = 1800.0
CHECK_EVERY_S = 60.0
#: A workload still running after this much mock time has a request that never returned.
WORKLOAD_DEADLINE_S = 7 * 24 * 3600.0


@dataclass
class SimResult:
    seed: int
    transactions: int
    faults: frozenset[Fault]
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    trace_hash: str = ""
    trace_lines: int = 0
    violations: list[Violation] = field(default_factory=list)
    findings: list[Violation] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    injected: dict[str, int] = field(default_factory=dict)
    actor_crashes: int = 0
    generations: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    tail: list[str] = field(default_factory=list)
    tolerated: frozenset[str] = frozenset()
    #: The full traceback when the run itself crashed.
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations

    def replay_command(self) -> str:
        faults = "all" if self.faults == ALL else ",".join(sorted(self.faults)) or "none"
        strict = "" if self.tolerated else " --strict"
        return (f"python run.py simulate --seed {self.seed} "
                f"--transactions {self.transactions} --faults {faults}{strict}")

    def summary(self) -> dict[str, Any]:
        return {
            "transactions": self.transactions,
            "sim_seconds": round(self.sim_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "tx_per_wall_s": round(self.transactions / max(self.wall_seconds, 1e-9), 1),
            "trace_hash": self.trace_hash,
            "violations": len(self.violations),
        }


def run_simulation(
    seed: int,
    transactions: int,
    faults: Iterable[Fault] = ALL,
    *,
    liveness_s: float = LIVENESS_S,
    tolerate: Iterable[str] = KNOWN_FINDINGS,
) -> SimResult:
    """Run one seed in a fresh ``trio.run``; never raises for a PenPay failure."""
    result = SimResult(seed=seed, transactions=transactions, faults=frozenset(faults))
    result.tolerated = frozenset(tolerate)
    seed_trio_scheduler(seed)
    started = time.perf_counter()
    logging.disable(logging.CRITICAL)  # crashes are the point; PenPay's logs would drown output
    try:
        trio.run(_main, result, liveness_s, clock=sim_clock())
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        result.error = "".join(traceback.format_exception(exc))
        summary = traceback.format_exception_only(exc)[-1].strip()
        result.violations.append(Violation("simulation_error", summary, seed, result.trace_lines))
    finally:
        logging.disable(logging.NOTSET)
    result.wall_seconds = time.perf_counter() - started
    return result


async def _main(result: SimResult, liveness_s: float) -> None:
    trace = Trace()
    chaos = Chaos(random.Random(f"{result.seed}-chaos"))
    world = SimWorld(result.seed, trace, chaos)
    stats = result.stats
    checker = Checker(world, stats, tolerated=result.tolerated)
    world.on_status = checker.saw_status
    try:
        async with trio.open_nursery() as root:
            await world.start(root)
            nemesis = Nemesis(world, result.faults, mean_gap_s=45.0)
            async with trio.open_nursery() as running:
                running.start_soon(nemesis.run)
                running.start_soon(_sample, checker)
                with trio.move_on_after(WORKLOAD_DEADLINE_S) as deadline:
                    await run_workload(world, result.transactions, stats,
                                       odd_callbacks=Fault.CALLBACKS in result.faults)
                if deadline.cancelled_caught:
                    checker.fail("workload_hung", f"{stats.sent - stats.answered} requests open")
                nemesis.stop()
                await nemesis.finished.wait()
                running.cancel_scope.cancel()
            trace.record("liveness", "faults stopped")
            await trio.sleep(liveness_s)
            try:
                await settle(world.system)
            except AssertionError:
                checker.fail("never_settled", _still_busy(world))
            await checker.check_final()
            result.injected = dict(nemesis.injected)
            result.actor_crashes = chaos.crashes
            result.generations = world.generations
            for state in checker.last_status.values():
                result.statuses[state] = result.statuses.get(state, 0) + 1
            await world.stop()
            root.cancel_scope.cancel()
    finally:
        result.violations.extend(checker.violations)
        result.findings.extend(checker.findings)
        result.sim_seconds = trio.current_time()
        result.trace_hash = trace.hexdigest()
        result.trace_lines = trace.lines
        result.tail = list(trace.tail)


def _still_busy(world: SimWorld) -> str:
    """The actors that kept working after the faults stopped, with their last failure."""
    busy = [
        f"{a.kind}/{a.key} {a.status.value} after {a.restarts} restarts ({a.failure})"
        for a in world.system.actors()
        if a.status is not ActorStatus.RUNNING or a.mailbox_depth
    ]
    return "; ".join(busy[:5]) or "no actor named"


async def _sample(checker: Checker) -> None:
    while True:
        await trio.sleep(CHECK_EVERY_S)
        checker.check_continuous()
