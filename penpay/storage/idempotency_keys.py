"""Idempotency-key records (reliability.md §1.5): the store behind ``@idempotent``.

A key is scoped to its principal. :meth:`IdempotencyStore.claim` is the one
atomic step: it either creates the record with a lease (``locked_until``) —
the caller then runs the request — or reports why it must not: another copy
holds the lease (``in_progress``), the key was used for another request
(``mismatch``), or the request already finished (``replay``, with the stored
response). A lease that ran out, or a record released after a transient
failure, is taken over by the next claim with the same fingerprint.

Each claim is numbered (``Claim.lease``); :meth:`~IdempotencyStore.complete`
and :meth:`~IdempotencyStore.release` name the lease they hold and change
nothing once another copy has taken the key over: a copy that outlived its
lease can neither free the new holder's claim (a third copy would run
alongside it) nor overwrite the response it stored.

Times come from the caller's clock, so the twin and PostgreSQL agree and
tests can move time.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import msgspec

from penpay.storage.pg import Database

#: Finished keys are kept this long (clients are promised 24 h).
RETENTION_S = 72 * 3600
REAP_BATCH_ROWS = 1000


class StoredResponse(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    body: bytes
    headers: dict[str, str]


class Claim(msgspec.Struct, frozen=True):
    """Outcome of :meth:`IdempotencyStore.claim`; ``response`` is set for ``replay``,
    ``lease`` (which claim of the key this is) for ``claimed``."""

    kind: Literal["claimed", "in_progress", "mismatch", "replay"]
    response: StoredResponse | None = None
    lease: int = 0


class IdempotencyRequest(msgspec.Struct, frozen=True, kw_only=True):
    principal_id: uuid.UUID
    key: str
    method: str
    route: str
    fingerprint: bytes


class IdempotencyStore(Protocol):
    async def claim(
        self, request: IdempotencyRequest, *, now: datetime, lease_s: float
    ) -> Claim: ...

    async def complete(
        self, principal_id: uuid.UUID, key: str, response: StoredResponse, *,
        now: datetime, lease: int,
    ) -> None:
        """Store the final response and drop the lease, if ``lease`` still holds it."""

    async def release(self, principal_id: uuid.UUID, key: str, lease: int) -> None:
        """Drop the lease without a response (transient failure): a retry runs again."""

    async def reap(self, *, finished_before: datetime) -> int:
        """Delete finished records older than ``finished_before``; returns how many."""


def _decide(
    request: IdempotencyRequest,
    *,
    method: str,
    route: str,
    fingerprint: bytes,
    locked_until: datetime | None,
    response: StoredResponse | None,
    now: datetime,
) -> Claim | None:
    """What an existing record means for ``request``; None means "take it over"."""
    if (method, route, fingerprint) != (request.method, request.route, request.fingerprint):
        return Claim("mismatch")
    if response is not None:
        return Claim("replay", response)
    if locked_until is not None and locked_until > now:
        return Claim("in_progress")
    return None


class _Record(msgspec.Struct, kw_only=True):
    request: IdempotencyRequest
    created_at: datetime
    locked_until: datetime | None
    lease: int = 1
    response: StoredResponse | None = None
    finished_at: datetime | None = None


class MemoryIdempotencyStore:
    """In-memory twin; every method is free of awaits, hence atomic under trio."""

    def __init__(self) -> None:
        self.records: dict[tuple[uuid.UUID, str], _Record] = {}

    async def claim(self, request: IdempotencyRequest, *, now: datetime, lease_s: float) -> Claim:
        lease = now + timedelta(seconds=lease_s)
        ident = (request.principal_id, request.key)
        record = self.records.get(ident)
        if record is None:
            self.records[ident] = _Record(request=request, created_at=now, locked_until=lease)
            return Claim("claimed", lease=1)
        old = record.request
        decided = _decide(
            request, method=old.method, route=old.route, fingerprint=old.fingerprint,
            locked_until=record.locked_until, response=record.response, now=now,
        )  # fmt: skip
        if decided is not None:
            return decided
        record.locked_until = lease
        record.lease += 1
        return Claim("claimed", lease=record.lease)

    async def complete(
        self, principal_id: uuid.UUID, key: str, response: StoredResponse, *,
        now: datetime, lease: int,
    ) -> None:
        record = self.records.get((principal_id, key))
        if record is None or record.lease != lease or record.response is not None:
            return
        record.response = response
        record.locked_until = None
        record.finished_at = now

    async def release(self, principal_id: uuid.UUID, key: str, lease: int) -> None:
        record = self.records.get((principal_id, key))
        if record is not None and record.lease == lease and record.response is None:
            record.locked_until = None

    async def reap(self, *, finished_before: datetime) -> int:
        doomed = [
            ident
            for ident, r in self.records.items()
            if r.finished_at is not None and r.finished_at < finished_before
        ]
        for ident in doomed[:REAP_BATCH_ROWS]:
            del self.records[ident]
        return min(len(doomed), REAP_BATCH_ROWS)


_CLAIM_NEW = (
    "INSERT INTO idempotency_keys (principal_id, idem_key, request_method, route, "
    "fingerprint, locked_until, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
    "ON CONFLICT (principal_id, idem_key) DO NOTHING RETURNING true"
)


def _claim_args(request: IdempotencyRequest, lease: datetime, now: datetime) -> tuple[Any, ...]:
    return (request.principal_id, request.key, request.method, request.route,
            request.fingerprint, lease, now)


class PgIdempotencyStore:
    """:class:`IdempotencyStore` on PostgreSQL (``migrations/0210_idempotency.sql``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, request: IdempotencyRequest, *, now: datetime, lease_s: float) -> Claim:
        lease = now + timedelta(seconds=lease_s)
        # The usual case, a new key, is one autocommitted statement: one round
        # trip and one commit on the request's path instead of four.
        if await self._db.fetchval(_CLAIM_NEW, *_claim_args(request, lease, now)):
            return Claim("claimed", lease=1)
        async with self._db.transaction() as conn:
            inserted = await conn.fetchval(_CLAIM_NEW, *_claim_args(request, lease, now))
            if inserted:  # reaped since the first attempt
                return Claim("claimed", lease=1)
            row = await conn.fetchrow(
                "SELECT request_method, route, fingerprint, locked_until, response_status, "
                "response_body, response_headers FROM idempotency_keys "
                "WHERE principal_id = $1 AND idem_key = $2 FOR UPDATE",
                request.principal_id, request.key,
            )  # fmt: skip
            if row is None:  # reaped between the two statements: the caller may retry
                return Claim("in_progress")
            response = None
            if row["response_status"] is not None:
                response = StoredResponse(
                    status=row["response_status"],
                    body=bytes(row["response_body"]),
                    headers=msgspec.json.decode(row["response_headers"] or "{}"),
                )
            decided = _decide(
                request, method=row["request_method"], route=row["route"],
                fingerprint=bytes(row["fingerprint"]), locked_until=row["locked_until"],
                response=response, now=now,
            )  # fmt: skip
            if decided is not None:
                return decided
            number = await conn.fetchval(
                "UPDATE idempotency_keys SET locked_until = $3, lease = lease + 1 "
                "WHERE principal_id = $1 AND idem_key = $2 RETURNING lease",
                request.principal_id, request.key, lease,
            )  # fmt: skip
            return Claim("claimed", lease=number)

    async def complete(
        self, principal_id: uuid.UUID, key: str, response: StoredResponse, *,
        now: datetime, lease: int,
    ) -> None:
        await self._db.execute(
            "UPDATE idempotency_keys SET response_status = $3, response_body = $4, "
            "response_headers = $5::jsonb, locked_until = NULL, finished_at = $6 "
            "WHERE principal_id = $1 AND idem_key = $2 AND lease = $7 "
            "AND response_status IS NULL",
            principal_id, key, response.status, response.body,
            msgspec.json.encode(response.headers).decode(), now, lease,
        )  # fmt: skip

    async def release(self, principal_id: uuid.UUID, key: str, lease: int) -> None:
        await self._db.execute(
            "UPDATE idempotency_keys SET locked_until = NULL "
            "WHERE principal_id = $1 AND idem_key = $2 AND lease = $3 "
            "AND response_status IS NULL",
            principal_id, key, lease,
        )  # fmt: skip

    async def reap(self, *, finished_before: datetime) -> int:
        status = await self._db.execute(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY("
            "SELECT ctid FROM idempotency_keys WHERE finished_at < $1 LIMIT $2))",
            finished_before, REAP_BATCH_ROWS,
        )  # fmt: skip
        return int(status.split()[-1])
