"""The transactions read model (PostgreSQL, and its in-memory twin).

The transaction actors are the truth; this index is what the list and
lookup routes read, what daily caps are summed from, and where an
Idempotency-Key is tied to the transaction it created before that
transaction starts (Brandur's recovery point), so a request retried after a
crash finds its transaction instead of making a second one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from penpay.actors.index import NOT_COUNTED, TransactionIndex, TransactionRow
from penpay.storage.pg import Database, Record

__all__ = ["MemoryTransactionIndex", "PgTransactionIndex", "TransactionIndex", "TransactionRow"]

def _history_length(view: dict[str, Any]) -> int:
    """How many status changes a view reports: the order of a transaction's reports."""
    history = view.get("history")
    return len(history) if isinstance(history, list) else 0


def _row(record: Record) -> TransactionRow:
    view = record["view"]
    return TransactionRow(
        id=record["id"],
        user_id=record["user_id"],
        type=record["type"],
        idempotency_key=record["idempotency_key"],
        status=record["status"],
        usd_cents=record["usd_cents"],
        kes_cents=record["kes_cents"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        view=msgspec.json.decode(view) if isinstance(view, str | bytes) else view,
    )


class PgTransactionIndex:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def reserve(self, row: TransactionRow) -> TransactionRow:
        inserted = await self.db.fetchrow(
            """
            INSERT INTO transactions
                (id, user_id, type, idempotency_key, status, usd_cents, kes_cents,
                 created_at, updated_at, view)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)
            ON CONFLICT (user_id, idempotency_key) DO NOTHING
            RETURNING *
            """,
            row.id, row.user_id, row.type, row.idempotency_key, row.status, row.usd_cents,
            row.kes_cents, row.created_at, row.updated_at, msgspec.json.encode(row.view).decode(),
        )
        if inserted is not None:
            return _row(inserted)
        existing = await self.db.fetchrow(
            "SELECT * FROM transactions WHERE user_id = $1 AND idempotency_key = $2",
            row.user_id, row.idempotency_key,
        )
        assert existing is not None
        return _row(existing)

    async def update(
        self, transaction_id: uuid.UUID, status: str, view: dict[str, Any], at: datetime
    ) -> None:
        await self.db.execute(
            """
            UPDATE transactions SET status = $2, view = $3::jsonb, updated_at = $4
            WHERE id = $1
              AND jsonb_array_length(coalesce(view -> 'history', '[]'::jsonb)) <= $5
            """,
            transaction_id, status, msgspec.json.encode(view).decode(), at, _history_length(view),
        )

    async def get(self, transaction_id: uuid.UUID) -> TransactionRow | None:
        record = await self.db.fetchrow("SELECT * FROM transactions WHERE id = $1", transaction_id)
        return _row(record) if record is not None else None

    async def find(self, user_id: uuid.UUID, idempotency_key: str) -> TransactionRow | None:
        record = await self.db.fetchrow(
            "SELECT * FROM transactions WHERE user_id = $1 AND idempotency_key = $2",
            user_id, idempotency_key,
        )
        return _row(record) if record is not None else None

    async def page(
        self,
        *,
        user_id: uuid.UUID | None,
        type: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[TransactionRow]:
        records = await self.db.fetch(
            """
            SELECT * FROM transactions
            WHERE ($1::uuid IS NULL OR user_id = $1)
              AND ($2::text IS NULL OR type = $2)
              AND ($3::text IS NULL OR status = $3)
              AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
            ORDER BY created_at DESC, id DESC
            LIMIT $6
            """,
            user_id, type, status, before[0] if before else None,
            before[1] if before else None, limit,
        )
        return [_row(r) for r in records]

    async def used_usd_cents(self, user_id: uuid.UUID, type: str, since: datetime) -> int:
        total = await self.db.fetchval(
            """
            SELECT coalesce(sum(usd_cents), 0) FROM transactions
            WHERE user_id = $1 AND type = $2 AND created_at >= $3
              AND status <> ALL($4::text[])
            """,
            user_id, type, since, list(NOT_COUNTED),
        )
        return int(total)


    async def count_by_status(self) -> dict[str, int]:
        rows = await self.db.fetch("SELECT status, count(*) AS n FROM transactions GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}


class MemoryTransactionIndex:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, TransactionRow] = {}
        # The database's unique (user_id, idempotency_key) and its user_id index:
        # per-user questions stay cheap however many users a simulation has.
        self._by_key: dict[tuple[uuid.UUID, str], uuid.UUID] = {}
        self._by_user: dict[uuid.UUID, list[uuid.UUID]] = {}

    async def reserve(self, row: TransactionRow) -> TransactionRow:
        existing = self._by_key.get((row.user_id, row.idempotency_key))
        if existing is not None:
            return self.rows[existing]
        if row.id in self.rows:
            raise ValueError(f"transaction {row.id} exists")
        self.rows[row.id] = row
        self._by_key[(row.user_id, row.idempotency_key)] = row.id
        self._by_user.setdefault(row.user_id, []).append(row.id)
        return row

    def _candidates(self, user_id: uuid.UUID | None) -> list[TransactionRow]:
        if user_id is None:
            return list(self.rows.values())
        return [self.rows[i] for i in self._by_user.get(user_id, ())]

    async def update(
        self, transaction_id: uuid.UUID, status: str, view: dict[str, Any], at: datetime
    ) -> None:
        row = self.rows.get(transaction_id)
        if row is not None and _history_length(row.view) <= _history_length(view):
            self.rows[transaction_id] = msgspec.structs.replace(
                row, status=status, view=view, updated_at=at
            )

    async def get(self, transaction_id: uuid.UUID) -> TransactionRow | None:
        return self.rows.get(transaction_id)

    async def find(self, user_id: uuid.UUID, idempotency_key: str) -> TransactionRow | None:
        found = self._by_key.get((user_id, idempotency_key))
        return self.rows[found] if found is not None else None

    async def page(
        self,
        *,
        user_id: uuid.UUID | None,
        type: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[TransactionRow]:
        rows = [
            r for r in self._candidates(user_id)
            if (type is None or r.type == type)
            and (status is None or r.status == status)
            and (before is None or (r.created_at, r.id) < before)
        ]
        rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return rows[:limit]

    async def used_usd_cents(self, user_id: uuid.UUID, type: str, since: datetime) -> int:
        return sum(
            r.usd_cents for r in self._candidates(user_id)
            if r.type == type and r.created_at >= since
            and r.status not in NOT_COUNTED
        )

    async def count_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts
