"""Migrations: ordered, recorded, idempotent, safe when two processes race."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from penpay.storage.migrations import migrate, migration_files
from penpay.storage.pg import QueryFailed, database
from penpay.storage.testing import fresh_database

pytestmark = pytest.mark.storage


def test_files_are_discovered_in_name_order() -> None:
    names = [name for name, _ in migration_files()]
    assert names[0] == "0001_journal.sql" and names == sorted(names)


async def test_two_runners_at_once_apply_each_file_exactly_once(pg_admin_url: str) -> None:
    async with fresh_database(pg_admin_url) as url, database(url) as a, database(url) as b:
        results: list[list[str]] = []

        async def run(db: object) -> None:
            from penpay.storage.pg import Database

            assert isinstance(db, Database)
            results.append(await migrate(db))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, a)
            nursery.start_soon(run, b)
        every = [name for name, _ in migration_files()]
        assert sorted(results, key=len) == [[], every]
        assert await migrate(a) == []
        rows = await a.fetch("SELECT name FROM schema_migrations ORDER BY 1")
        recorded = [r["name"] for r in rows]
        assert recorded == every


async def test_a_later_file_is_applied_after_the_earlier_ones(
    pg_admin_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x int);")
    async with fresh_database(pg_admin_url) as url, database(url) as db:
        assert await migrate(db, tmp_path) == ["0001_a.sql"]
        (tmp_path / "0002_b.sql").write_text("INSERT INTO a VALUES (1); CREATE TABLE b (y int);")
        assert await migrate(db, tmp_path) == ["0002_b.sql"]
        assert await db.fetchval("SELECT count(*) FROM a") == 1
        (tmp_path / "0003_bad.sql").write_text("CREATE TABLE c (z int); SELECT nonsense;")
        with pytest.raises(QueryFailed, match="nonsense"):
            await migrate(db, tmp_path)
        # A failed file leaves nothing behind and is not recorded.
        assert await db.fetchval("SELECT to_regclass('c')") is None
