"""Fixtures for storage tests: a fresh PostgreSQL database per test, Redis.

Servers come from :mod:`penpay.storage.testing` (embedded unless
``PENPAY_TEST_DATABASE_URL`` / ``PENPAY_TEST_REDIS_URL`` are set).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from penpay.storage.pg import Database
from penpay.storage.testing import (
    migrated_database,
    test_database_admin_url,
    test_redis_url,
)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return test_database_admin_url()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return test_redis_url()


@pytest.fixture
async def db(pg_admin_url: str) -> AsyncIterator[Database]:
    """A migrated, empty database for this test only."""
    async with migrated_database(pg_admin_url) as database:
        yield database
