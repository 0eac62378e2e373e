"""Schema migrations: ordered plain SQL files, each applied once.

Files live in ``penpay/storage/migrations/`` and are named
``NNNN_what.sql``; they are applied in name order, each in its own
transaction, and recorded in ``schema_migrations``. Adding a feature's tables
means adding the next file; an applied file is never edited.

Two processes starting at once are safe: the runner holds a session advisory
lock for the whole run, so the second waits and then finds nothing to do.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import trio

from penpay.storage.pg import Database, database

log = logging.getLogger("penpay.storage.migrations")

#: Advisory-lock key that serialises migration runs (any fixed 64-bit number).
MIGRATION_LOCK_KEY = 0x70656E7061790001

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text        PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def migration_files(directory: Path | None = None) -> list[tuple[str, str]]:
    """``(name, sql)`` of every ``*.sql`` file, in name order."""
    if directory is None:
        root = resources.files("penpay.storage") / "migrations"
        entries = [
            (e.name, e.read_text("utf-8")) for e in root.iterdir() if e.name.endswith(".sql")
        ]
    else:
        entries = [(p.name, p.read_text("utf-8")) for p in directory.glob("*.sql")]
    return sorted(entries)


async def migrate(db: Database, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    applied_now: list[str] = []
    async with db.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(_CREATE_TABLE)
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            for name, sql in migration_files(directory):
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                log.info("applied migration %s", name)
                applied_now.append(name)
        finally:
            with trio.CancelScope(shield=True):
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


def migrate_command(database_url: str | None) -> int:
    """``run.py migrate``: apply migrations to ``database_url`` (or the embedded server).

    Returns a process exit status: 0 on success, 1 if the database failed.
    """
    from penpay.config.settings import load_settings
    from penpay.storage.embedded import EmbeddedPostgres, start_embedded_postgres
    from penpay.storage.pg import DatabaseError

    embedded: EmbeddedPostgres | None = None
    if database_url is None:
        settings = load_settings()
        database_url = settings.database_url
        if database_url is None:
            embedded = start_embedded_postgres(settings.data_dir)
            database_url = embedded.url

    async def main(url: str) -> list[str]:
        async with database(url, pool_size_max=1) as db:
            return await migrate(db)

    try:
        applied = trio.run(main, database_url)
    except DatabaseError as exc:
        print(f"migration failed: {exc}")
        return 1
    finally:
        if embedded is not None:
            embedded.close()
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0
