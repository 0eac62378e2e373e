"""Driving actors deterministically in tests.

Run the test under ``trio.testing.MockClock(autojump_threshold=0)`` (the
pytest-trio ``autojump_clock`` fixture): time then advances only when every
task is blocked, straight to the next deadline, so ``await trio.sleep(600)``
"waits" ten minutes in microseconds and timers fire at exact mock times.

    async def test_reminder(autojump_clock):
        async with open_test_system(seed=1) as system:
            await system.ref(Reminder, "r1").tell(Arm(after_s=30))
            await trio.sleep(31)
            await settle(system)
            assert (await system.inspect(Reminder, "r1"))["fired"]
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import trio
import trio.testing

from penpay.engine.clock import Clock, Entropy
from penpay.engine.persistence import InMemoryJournal, Journal
from penpay.engine.system import ActorSystem, EngineConfig, open_actor_system

#: The wall-clock time at the start of every deterministic test run.
TEST_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

_SETTLE_TICK_S = 0.001


@asynccontextmanager
async def open_test_system(
    *,
    seed: int = 0,
    config: EngineConfig | None = None,
    journal: Journal | None = None,
    wall_anchor: datetime = TEST_EPOCH,
) -> AsyncIterator[ActorSystem]:
    """An actor system with a fixed wall-clock anchor and seeded entropy."""
    clock = Clock(wall_anchor)
    async with open_actor_system(
        config=config,
        clock=clock,
        entropy=Entropy(seed),
        journal=journal if journal is not None else InMemoryJournal(clock.now_ms),
    ) as system:
        yield system


async def settle(system: ActorSystem, *, max_ticks: int = 100_000) -> None:
    """Wait until every actor is idle: mailboxes empty, nothing being handled.

    Pending timers do not count as work. When some actor is still busy (for
    example sleeping out a restart back-off), mock time advances in small
    ticks so its deadline comes; under a real clock this would be a poll.
    """
    for _ in range(max_ticks):
        await trio.testing.wait_all_tasks_blocked()
        if system.is_idle():
            return
        await trio.sleep(_SETTLE_TICK_S)
    raise AssertionError(f"actors still busy after {max_ticks} settle ticks")
