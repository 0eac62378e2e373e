"""Making one ``trio.run`` reproducible: a seeded scheduler and a mock clock.

trio deliberately shuffles which ready task runs next, using the module RNG
``trio._core._run._r``; unless ``_ALLOW_DETERMINISTIC_SCHEDULING`` is set it
also mixes in extra randomness. Both are private API (reliability.md §2.3),
so they are touched here only, and ``tests/sim/test_determinism.py`` fails
loudly if a trio upgrade removes them.
"""

from __future__ import annotations

import trio
import trio.testing
from trio._core import _run as trio_run


def seed_trio_scheduler(seed: int) -> None:
    """Make trio's task scheduling a function of ``seed`` for the next ``trio.run``."""
    if not hasattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING") or not hasattr(trio_run, "_r"):
        raise RuntimeError(
            f"trio {trio.__version__} no longer has the scheduler hooks the simulation needs"
        )
    setattr(trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", True)  # noqa: B010 - Final in trio
    trio_run._r.seed(seed)


def sim_clock() -> trio.testing.MockClock:
    """Time moves only when every task is blocked, straight to the next deadline."""
    return trio.testing.MockClock(autojump_threshold=0)
