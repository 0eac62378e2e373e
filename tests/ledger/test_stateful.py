"""The stateful ledger test: in memory under a mock clock, and a smaller run on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings

from penpay.actors.ledger.store import TransferStore
from penpay.engine import InMemoryJournal, Journal
from penpay.storage.transfers_memory import InMemoryTransferStore
from tests.ledger.stateful import LedgerMachine, StepBackend

#: Simulated store round trip; crash rules cancel after 0..6 of these.
STORE_LATENCY_S = 0.001


def _run_mock(fn: Callable[[], Awaitable[None]]) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


class InMemoryLedgerMachine(LedgerMachine):
    def __init__(self) -> None:
        super().__init__()
        journal = InMemoryJournal()
        store = InMemoryTransferStore(latency_s=STORE_LATENCY_S)

        @asynccontextmanager
        async def open_() -> AsyncIterator[tuple[Journal, TransferStore]]:
            yield journal, store

        self.backend = StepBackend(open=open_, run=_run_mock, crash_tick_s=STORE_LATENCY_S)


InMemoryLedgerMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestInMemoryLedger = InMemoryLedgerMachine.TestCase
