"""Planner statistics refreshed as a writer grows its tables (penpay.storage.statistics)."""

from __future__ import annotations

import pytest
import trio

from penpay.actors.ledger import DEFAULT_CHART, Transfer, TransferKind
from penpay.actors.ledger.store import CommitOutcome
from penpay.money import Currency
from penpay.storage.pg import Database
from penpay.storage.statistics import GrowthAnalyzer
from penpay.storage.transfers import open_pg_transfer_store

pytestmark = pytest.mark.storage

_TABLES = ("ledger_transfers", "ledger_groups")


async def _reltuples(db: Database, table: str) -> float:
    return float(await db.fetchval("SELECT reltuples FROM pg_class WHERE relname = $1", table))


async def _without_autovacuum(db: Database) -> None:
    """So that only the analyzer under test can change the statistics."""
    for table in _TABLES:
        await db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")


def test_refuses_names_that_are_not_plain_identifiers() -> None:
    with pytest.raises(ValueError, match="identifiers"):
        GrowthAnalyzer(None, ["ledger_transfers; DROP TABLE users"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_rows"):
        GrowthAnalyzer(None, ["ledger_transfers"], min_rows=0)  # type: ignore[arg-type]


async def test_analyses_each_time_the_table_has_doubled(db: Database) -> None:
    await _without_autovacuum(db)
    analyzer = GrowthAnalyzer(db, _TABLES, min_rows=10)
    assert analyzer.added(50) is False  # the table's size is not known before run() starts
    async with trio.open_nursery() as nursery:
        nursery.start_soon(analyzer.run)
        await analyzer.wait_analyses(1)  # 50 rows since an empty table: due at once
        assert analyzer.added(49) is False  # the table is believed to hold 50 now
        assert analyzer.added(1) is True
        await analyzer.wait_analyses(2)
        assert analyzer.added(99) is False  # ... and now 100
        assert analyzer.added(1) is True
        await analyzer.wait_analyses(3)
        nursery.cancel_scope.cancel()


async def test_the_transfer_writer_keeps_statistics_current(db: Database) -> None:
    await _without_autovacuum(db)
    assert await _reltuples(db, "ledger_transfers") <= 0  # never analysed
    async with open_pg_transfer_store(db, analyze_min_rows=20) as store:
        await store.register_accounts(DEFAULT_CHART)
        for i in range(25):
            transfer = Transfer(
                id=f"00000000-0000-4000-8000-{i:012d}",
                debit_account="mpesa_float",
                credit_account="owner_equity_kes",
                amount_cents=100,
                currency=Currency.KES,
                kind=TransferKind.POSTED,
                code="test",
            )
            group = f"00000000-0000-7000-8000-{i:012d}"
            assert await store.commit(group, [transfer]) is CommitOutcome.COMMITTED
        await store.statistics.wait_analyses(1)
    assert await _reltuples(db, "ledger_transfers") >= 20
    assert await _reltuples(db, "ledger_groups") >= 20
