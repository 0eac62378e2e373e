"""The transactions read model's interface: what the payments service needs of it.

Implemented by :mod:`penpay.storage.transactions` (PostgreSQL and an in-memory
twin that pass one contract suite).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Protocol

import msgspec

#: A reserved transaction that was refused before it started (an internal status).
REFUSED = "REFUSED"
#: Statuses whose money did not stay moved, or never moved; they count towards no cap.
NOT_COUNTED = ("FAILED", "REVERSED", REFUSED)


class TransactionRow(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    user_id: uuid.UUID
    type: str
    idempotency_key: str
    status: str
    usd_cents: int
    kes_cents: int
    created_at: datetime
    updated_at: datetime
    view: dict[str, Any]


class TransactionIndex(Protocol):
    async def reserve(self, row: TransactionRow) -> TransactionRow:
        """Insert ``row`` unless its idempotency key was used; return what is stored."""
        ...

    async def update(
        self, transaction_id: uuid.UUID, status: str, view: dict[str, Any], at: datetime
    ) -> None:
        """Store what the transaction reported, unless a later report is already stored.

        Reports can arrive out of order (the answer to a Start is written after
        the actor has moved on and reported again), so a view whose
        ``history`` is shorter than the stored one is stale and is ignored.
        """
        ...

    async def get(self, transaction_id: uuid.UUID) -> TransactionRow | None: ...

    async def find(self, user_id: uuid.UUID, idempotency_key: str) -> TransactionRow | None:
        """The transaction this user's ``idempotency_key`` was reserved for, if any."""
        ...

    async def page(
        self,
        *,
        user_id: uuid.UUID | None,
        type: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[TransactionRow]:
        """Newest first; ``before`` is the (created_at, id) of the last row seen."""
        ...

    async def used_usd_cents(self, user_id: uuid.UUID, type: str, since: datetime) -> int:
        """What the user moved of ``type`` since ``since``, failed and reversed excluded."""
        ...

    async def count_by_status(self) -> dict[str, int]:
        """How many transactions are in each status (for metrics)."""
        ...
