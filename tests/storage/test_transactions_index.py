"""One contract for the transactions read model, against PostgreSQL and the twin."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from penpay.storage.transactions import (
    MemoryTransactionIndex,
    PgTransactionIndex,
    TransactionIndex,
    TransactionRow,
)
from tests.storage.backends import EACH_BACKEND, twin_or_postgres

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
ALICE, BOB = uuid.UUID(int=1), uuid.UUID(int=2)


@pytest.fixture(params=EACH_BACKEND)
async def index(
    request: pytest.FixtureRequest, pg_admin_url: str
) -> AsyncIterator[TransactionIndex]:
    async with twin_or_postgres(
        request.param, pg_admin_url, MemoryTransactionIndex, PgTransactionIndex
    ) as transactions:
        yield transactions


def row(n: int, user: uuid.UUID = ALICE, *, key: str | None = None, usd: int = 1000,
        type: str = "deposit", minutes: int = 0) -> TransactionRow:
    at = T0 + timedelta(minutes=minutes)
    return TransactionRow(
        id=uuid.UUID(int=100 + n), user_id=user, type=type, idempotency_key=key or f"key-{n}",
        status="PENDING", usd_cents=usd, kes_cents=usd * 130, created_at=at, updated_at=at,
        view={"transaction_id": str(uuid.UUID(int=100 + n))},
    )


async def test_reserve_returns_the_first_row_for_a_key(index: TransactionIndex) -> None:
    first = await index.reserve(row(1, key="same"))
    again = await index.reserve(row(2, key="same"))
    assert again.id == first.id == uuid.UUID(int=101)
    other_user = await index.reserve(row(3, BOB, key="same"))  # keys are per user
    assert other_user.id == uuid.UUID(int=103)
    assert await index.get(uuid.UUID(int=102)) is None


async def test_update_and_get(index: TransactionIndex) -> None:
    await index.reserve(row(1))
    later = T0 + timedelta(minutes=5)
    await index.update(uuid.UUID(int=101), "COMPLETED", {"status": "COMPLETED"}, later)
    got = await index.get(uuid.UUID(int=101))
    assert got is not None
    assert (got.status, got.view, got.updated_at) == ("COMPLETED", {"status": "COMPLETED"}, later)


async def test_pages_newest_first_with_filters(index: TransactionIndex) -> None:
    for n in range(5):
        await index.reserve(row(n, minutes=n, type="deposit" if n % 2 else "withdrawal"))
    await index.reserve(row(9, BOB, minutes=9))
    first = await index.page(user_id=ALICE, limit=2)
    assert [r.id.int - 100 for r in first] == [4, 3]
    rest = await index.page(user_id=ALICE, limit=10, before=(first[-1].created_at, first[-1].id))
    assert [r.id.int - 100 for r in rest] == [2, 1, 0]
    deposits = await index.page(user_id=ALICE, type="deposit")
    assert [r.id.int - 100 for r in deposits] == [3, 1]
    everyone = await index.page(user_id=None, status="PENDING")
    assert len(everyone) == 6


async def test_daily_usage_excludes_failed_reversed_and_refused(index: TransactionIndex) -> None:
    await index.reserve(row(1, usd=500, minutes=10))
    await index.reserve(row(2, usd=700, minutes=20))
    await index.reserve(row(3, usd=900, minutes=30))
    await index.reserve(row(4, usd=50, minutes=-120))  # before the day started
    await index.update(uuid.UUID(int=103), "FAILED", {}, T0)
    assert await index.used_usd_cents(ALICE, "deposit", T0) == 1200
    assert await index.used_usd_cents(ALICE, "withdrawal", T0) == 0
    await index.reserve(row(5, usd=300, minutes=40))
    await index.update(uuid.UUID(int=105), "REFUSED", {}, T0)  # closed before it started
    assert await index.used_usd_cents(ALICE, "deposit", T0) == 1200


async def test_find_names_the_row_a_key_was_reserved_for(index: TransactionIndex) -> None:
    await index.reserve(row(1, key="k-alice"))
    found = await index.find(ALICE, "k-alice")
    assert found is not None and found.id == uuid.UUID(int=101)
    assert await index.find(BOB, "k-alice") is None  # keys are per user
    assert await index.find(ALICE, "k-other") is None


def _reported(*statuses: str) -> dict[str, object]:
    return {"status": statuses[-1], "history": [{"status": s} for s in statuses]}


async def test_a_stale_report_does_not_replace_a_later_one(index: TransactionIndex) -> None:
    await index.reserve(row(1))
    tx = uuid.UUID(int=101)
    await index.update(tx, "FAILED", _reported("PENDING", "FAILED"), T0)
    await index.update(tx, "PENDING", _reported("PENDING"), T0)  # Start's answer, written late
    got = await index.get(tx)
    assert got is not None and (got.status, got.view) == ("FAILED", _reported("PENDING", "FAILED"))
    await index.update(tx, "FAILED", _reported("PENDING", "FAILED"), T0)  # the same, again
    await index.update(tx, "REFUSED", {}, T0)  # a started transaction is never refused
    got = await index.get(tx)
    assert got is not None and got.status == "FAILED"
