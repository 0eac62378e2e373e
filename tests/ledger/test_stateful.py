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


class PostgresLedgerMachine(LedgerMachine):
    """The same machine on PostgreSQL (journal and transfer store), real clock."""

    def __init__(self) -> None:
        super().__init__()
        from penpay.storage.journal import open_pg_journal
        from penpay.storage.migrations import migrate
        from penpay.storage.pg import database
        from penpay.storage.testing import test_database_admin_url, with_database
        from penpay.storage.transfers import open_pg_transfer_store

        admin = test_database_admin_url()
        name = f"test_ledger_{id(self):x}"
        self._admin, self._name = admin, name
        url = with_database(admin, name)

        async def create() -> None:
            async with database(admin, pool_size_max=1) as db:
                await db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await db.execute(f'CREATE DATABASE "{name}"')
            async with database(url, pool_size_max=2) as db:
                await migrate(db)

        trio.run(create)

        @asynccontextmanager
        async def open_() -> AsyncIterator[tuple[Journal, TransferStore]]:
            async with (
                database(url, pool_size_max=4) as db,
                open_pg_journal(db, batch_window_ms=0.5) as journal,
                open_pg_transfer_store(db, batch_window_ms=0.5) as store,
            ):
                yield journal, store

        self.backend = StepBackend(open=open_, run=trio.run, crash_tick_s=0.002)

    def teardown(self) -> None:
        from penpay.storage.pg import database

        async def drop() -> None:
            async with database(self._admin, pool_size_max=1) as db:
                await db.execute(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)')

        trio.run(drop)


PostgresLedgerMachine.TestCase.settings = settings(
    max_examples=4,
    stateful_step_count=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPostgresLedger = pytest.mark.storage(PostgresLedgerMachine.TestCase)
