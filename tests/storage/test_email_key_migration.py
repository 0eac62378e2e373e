"""0230: e-mail uniqueness moves from lower(email) to email, keeping the rows already stored."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from penpay.storage.identity import EmailTaken, PgUserStore, User
from penpay.storage.migrations import migrate, migration_files
from penpay.storage.pg import Database, database
from penpay.storage.testing import fresh_database

pytestmark = pytest.mark.storage

MIGRATION = "0230_users_email_key.sql"
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _user(email: str, n: int) -> User:
    return User(
        id=uuid.UUID(int=n), email=email, phone_ciphertext=b"c", phone_key_version=1,
        phone_blind_index=b"bi", password_hash="$argon2id$fake", created_at=T0, updated_at=T0,
    )  # fmt: skip


def _write_files(directory: Path, *, through: str) -> None:
    """Copy the packaged migrations up to and including ``through`` into ``directory``."""
    for name, sql in migration_files():
        if name <= through:
            (directory / name).write_text(sql, "utf-8")


async def _email_index(db: Database) -> str:
    definition = await db.fetchval(
        "SELECT indexdef FROM pg_indexes "
        "WHERE tablename = 'users' AND indexname = 'users_email_key'"
    )
    return str(definition)


async def test_rows_stored_before_0230_stay_unique_and_reachable(
    pg_admin_url: str, tmp_path: Path
) -> None:
    before = max(name for name, _ in migration_files() if name < MIGRATION)
    _write_files(tmp_path, through=before)
    async with fresh_database(pg_admin_url) as url, database(url) as db:
        await migrate(db, tmp_path)
        users = PgUserStore(db)
        for n, email in enumerate(["wanjiru@example.com", "οδος@example.com", "i̇lker@example.com"]):
            await users.create_user(_user(email, n + 1))
        assert "lower(email)" in await _email_index(db)
        _write_files(tmp_path, through=MIGRATION)
        assert await migrate(db, tmp_path) == [MIGRATION]
        assert "lower(" not in await _email_index(db)
        assert (await users.find_by_email("ΟΔΟΣ@example.com")) is not None
        assert (await users.find_by_email("İLKER@example.com")) is not None
        with pytest.raises(EmailTaken):
            await users.create_user(_user("WANJIRU@example.com", 9))
