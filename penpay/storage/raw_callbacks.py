"""Raw Daraja callbacks, kept verbatim before they are processed.

Daraja delivers a callback once: if processing it fails, or its meaning is
disputed later, the stored body is the only record of what M-Pesa said.
PostgreSQL in production (``migrations/0310_raw_callbacks.sql``); the
in-memory twin for the simulation and unit tests.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from penpay.storage.pg import Database

#: What each callback answered: the route it came to, and for B2C routes
#: whether it answers a Transaction Status query rather than the payout.
KINDS = frozenset(
    {"stk", "b2c_result", "b2c_timeout", "b2c_status_result", "b2c_status_timeout"}
)


class RawCallback(msgspec.Struct, frozen=True):
    kind: str
    transaction_id: str
    source: str
    received_at_ms: int
    body: bytes


class RawCallbackStore(Protocol):
    """Where every accepted callback is kept verbatim, before it is processed."""

    async def store(self, callback: RawCallback) -> None: ...

    async def for_transaction(self, transaction_id: str) -> list[RawCallback]:
        """One transaction's callbacks, in the order they arrived."""
        ...


def _check_kind(callback: RawCallback) -> None:
    if callback.kind not in KINDS:
        raise ValueError(f"unknown callback kind {callback.kind!r}")


class InMemoryRawCallbacks:
    def __init__(self) -> None:
        self.items: list[RawCallback] = []

    async def store(self, callback: RawCallback) -> None:
        _check_kind(callback)
        self.items.append(callback)

    async def for_transaction(self, transaction_id: str) -> list[RawCallback]:
        return [c for c in self.items if c.transaction_id == transaction_id]


class PgRawCallbacks:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def store(self, callback: RawCallback) -> None:
        _check_kind(callback)
        await self._db.execute(
            "INSERT INTO raw_callbacks (kind, transaction_id, source, received_at, body) "
            "VALUES ($1, $2, $3, $4, $5)",
            callback.kind, uuid.UUID(callback.transaction_id), callback.source,
            datetime.fromtimestamp(callback.received_at_ms / 1000, UTC), callback.body,
        )  # fmt: skip

    async def for_transaction(self, transaction_id: str) -> list[RawCallback]:
        rows = await self._db.fetch(
            "SELECT kind, source, received_at, body FROM raw_callbacks "
            "WHERE transaction_id = $1 ORDER BY id",
            uuid.UUID(transaction_id),
        )  # fmt: skip
        return [
            RawCallback(
                kind=row["kind"], transaction_id=transaction_id, source=row["source"],
                received_at_ms=int(row["received_at"].timestamp() * 1000),
                body=bytes(row["body"]),
            )
            for row in rows
        ]
