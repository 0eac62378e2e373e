"""The audit log: append-only, hash-chained (reliability.md §3.5).

Each entry's ``hash`` is ``sha256(prev_hash || canonical_json(seq, at, actor,
action, subject, payload))`` and its ``prev_hash`` is the previous entry's
``hash`` (32 zero bytes for the first). Changing, removing or inserting any
row therefore breaks every later link, and :meth:`AuditLog.verify` names the
first entry whose link no longer holds.

PostgreSQL writers serialise on ``pg_advisory_xact_lock(AUDIT_LOCK_KEY)`` so
the chain has a single order; a trigger refuses UPDATE, DELETE and TRUNCATE
(``migrations/0220_audit.sql``). A superuser can still disable the trigger:
the chain is what makes that visible. Pass ``conn=`` to :meth:`PgAuditLog.append`
to write the entry in the caller's transaction, with the change it records.

Payloads must not hold raw PII: use ids, blind indexes or masked values.
:func:`check_payload` refuses the obvious field names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from penpay.engine.clock import Clock
from penpay.errors import PenPayError
from penpay.storage.pg import Connection, Database, Record
from penpay.text import storable_text

GENESIS_HASH = bytes(32)
#: Advisory-lock key that gives audit appends one order (any fixed 64-bit number).
AUDIT_LOCK_KEY = 0x70656E7061790220
#: Rows read per query while verifying.
VERIFY_BATCH_ROWS = 1000
PAGE_LIMIT_MAX = 500

_PII_KEYS = frozenset(
    {"phone", "phone_number", "msisdn", "email", "password", "token", "refresh_token",
     "access_token", "deriv_token"}
)  # fmt: skip


class AuditPayloadError(PenPayError):
    """An audit payload carries a field that looks like raw PII or a secret."""


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    payload: dict[str, Any]
    prev_hash: bytes
    hash: bytes


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """Result of :meth:`AuditLog.verify`: ``first_bad_seq`` is None when the chain holds."""

    ok: bool
    entries_checked: int
    first_bad_seq: int | None = None
    reason: str | None = None


def check_payload(payload: Mapping[str, Any]) -> None:
    """Refuse what the audit log must not or cannot hold, at any depth.

    Keys that name raw PII or secrets; floats, which PostgreSQL's jsonb
    gives back spelled otherwise (``1e16``, ``-0.0``), so the stored entry
    would no longer hash to its chain; and text PostgreSQL cannot store
    (NUL, lone surrogates). Both stores refuse the same payloads.
    """
    for key, value in payload.items():
        if key.lower() in _PII_KEYS:
            raise AuditPayloadError(f"audit payload field {key!r} looks like raw PII or a secret")
        _check_value(key, value)
        if isinstance(value, Mapping):
            check_payload(value)


def _check_value(key: str, value: Any) -> None:
    if isinstance(value, float):
        raise AuditPayloadError(f"audit payload field {key!r} is a float; use integers")
    if isinstance(value, str):
        check_text(key, value)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_value(key, item)


def check_entry(actor: str, action: str, subject: str, payload: Mapping[str, Any]) -> None:
    """Everything :func:`check_payload` checks, and the entry's text fields."""
    for field, text in (("actor", actor), ("action", action), ("subject", subject)):
        check_text(field, text)
    check_payload(payload)


def check_text(field: str, text: str) -> None:
    """Refuse text PostgreSQL cannot store: NUL and lone surrogates."""
    if not storable_text(text):
        raise AuditPayloadError(f"audit field {field!r} holds NUL or a lone surrogate")


def _at_text(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_entry(
    seq: int, at: datetime, actor: str, action: str, subject: str, payload: Mapping[str, Any]
) -> bytes:
    """The bytes that are hashed: JSON with sorted keys, no whitespace, UTC time in µs."""
    document = {
        "seq": seq,
        "at": _at_text(at),
        "actor": actor,
        "action": action,
        "subject": subject,
        "payload": payload,
    }
    return msgspec.json.encode(document, order="sorted")


def entry_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(prev_hash + canonical).digest()


def _check_link(entry: AuditEntry, expected_prev: bytes) -> str | None:
    if entry.prev_hash != expected_prev:
        return "prev_hash does not match the previous entry's hash"
    canonical = canonical_entry(
        entry.seq, entry.at, entry.actor, entry.action, entry.subject, entry.payload
    )
    if entry_hash(entry.prev_hash, canonical) != entry.hash:
        return "hash does not match the entry's content"
    return None


class AuditLog(Protocol):
    """Append and read the audit chain."""

    async def append(
        self, actor: str, action: str, subject: str, payload: Mapping[str, Any]
    ) -> AuditEntry:
        """Add one entry at the head of the chain."""

    async def page(self, *, after_seq: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Entries with ``seq > after_seq`` in order, at most ``limit``."""

    async def verify(self) -> VerifyReport:
        """Recompute the whole chain; report the first entry that fails."""


class MemoryAuditLog:
    """In-memory twin of :class:`PgAuditLog`. ``entries`` may be edited by tests to tamper."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.entries: list[AuditEntry] = []

    async def append(
        self, actor: str, action: str, subject: str, payload: Mapping[str, Any]
    ) -> AuditEntry:
        check_entry(actor, action, subject, payload)
        body = msgspec.json.decode(msgspec.json.encode(payload))  # a detached plain copy
        prev = self.entries[-1].hash if self.entries else GENESIS_HASH
        seq = self.entries[-1].seq + 1 if self.entries else 1
        at = self._clock.now()
        digest = entry_hash(prev, canonical_entry(seq, at, actor, action, subject, body))
        entry = AuditEntry(
            seq=seq, at=at, actor=actor, action=action, subject=subject, payload=body,
            prev_hash=prev, hash=digest,
        )  # fmt: skip
        self.entries.append(entry)
        return entry

    async def page(self, *, after_seq: int = 0, limit: int = 100) -> list[AuditEntry]:
        limit = max(1, min(limit, PAGE_LIMIT_MAX))
        return [e for e in self.entries if e.seq > after_seq][:limit]

    async def verify(self) -> VerifyReport:
        prev = GENESIS_HASH
        for count, entry in enumerate(self.entries):
            reason = _check_link(entry, prev)
            if reason is not None:
                return VerifyReport(
                    ok=False, entries_checked=count, first_bad_seq=entry.seq, reason=reason
                )
            prev = entry.hash
        return VerifyReport(ok=True, entries_checked=len(self.entries))


_COLUMNS = "seq, at, actor, action, subject, payload, prev_hash, hash"


def _entry(row: Record) -> AuditEntry:
    return AuditEntry(
        seq=row["seq"],
        at=row["at"],
        actor=row["actor"],
        action=row["action"],
        subject=row["subject"],
        payload=msgspec.json.decode(row["payload"]),
        prev_hash=bytes(row["prev_hash"]),
        hash=bytes(row["hash"]),
    )


class PgAuditLog:
    """:class:`AuditLog` on PostgreSQL."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def append(
        self,
        actor: str,
        action: str,
        subject: str,
        payload: Mapping[str, Any],
        *,
        conn: Connection | None = None,
    ) -> AuditEntry:
        """Append; with ``conn`` (in its transaction) the entry commits with the caller's work."""
        if conn is not None:
            return await self._append(conn, actor, action, subject, payload)
        async with self._db.transaction() as own:
            return await self._append(own, actor, action, subject, payload)

    async def _append(
        self, conn: Connection, actor: str, action: str, subject: str, payload: Mapping[str, Any]
    ) -> AuditEntry:
        check_entry(actor, action, subject, payload)
        body = msgspec.json.decode(msgspec.json.encode(payload))
        await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK_KEY)
        prev = await conn.fetchval("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        prev_hash = bytes(prev) if prev is not None else GENESIS_HASH
        # The seq is part of what is hashed, so take it before the INSERT; the
        # advisory lock makes sequence order equal chain order.
        seq = await conn.fetchval("SELECT nextval(pg_get_serial_sequence('audit_log', 'seq'))")
        at = self._clock.now()
        digest = entry_hash(prev_hash, canonical_entry(seq, at, actor, action, subject, body))
        await conn.execute(
            f"INSERT INTO audit_log ({_COLUMNS}) OVERRIDING SYSTEM VALUE "
            "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)",
            seq, at, actor, action, subject, msgspec.json.encode(body).decode(), prev_hash, digest,
        )  # fmt: skip
        return AuditEntry(
            seq=seq, at=at, actor=actor, action=action, subject=subject, payload=body,
            prev_hash=prev_hash, hash=digest,
        )  # fmt: skip

    async def page(self, *, after_seq: int = 0, limit: int = 100) -> list[AuditEntry]:
        limit = max(1, min(limit, PAGE_LIMIT_MAX))
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            after_seq, limit,
        )  # fmt: skip
        return [_entry(r) for r in rows]

    async def verify(self) -> VerifyReport:
        prev = GENESIS_HASH
        after, checked = 0, 0
        while True:
            batch = await self.page(after_seq=after, limit=VERIFY_BATCH_ROWS)
            if not batch:
                return VerifyReport(ok=True, entries_checked=checked)
            for entry in batch:
                reason = _check_link(entry, prev)
                if reason is not None:
                    return VerifyReport(
                        ok=False, entries_checked=checked, first_bad_seq=entry.seq, reason=reason
                    )
                prev = entry.hash
                checked += 1
            after = batch[-1].seq
