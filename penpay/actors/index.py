"""The transactions read model's interface: what the payments service needs of it.

Implemented by :mod:`penpay.storage.transactions` (PostgreSQL and an in-memory
twin that pass one contract suite).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Protocol

import msgspec

#: Statuses whose money did not stay moved; they do not count towards daily caps.
NOT_COUNTED = ("FAILED", "REVERSED")


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
    ) -> None: ...

    async def get(self, transaction_id: uuid.UUID) -> TransactionRow | None: ...

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
