"""Running one contract against the in-memory twin and against PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest

from penpay.storage.pg import Database
from penpay.storage.testing import migrated_database

T = TypeVar("T")

#: ``params`` of a fixture that yields each implementation; PostgreSQL's runs are
#: marked ``storage``.
EACH_BACKEND = ["memory", pytest.param("postgres", marks=pytest.mark.storage)]


@asynccontextmanager
async def twin_or_postgres(
    backend: str, admin_url: str, twin: Callable[[], T], postgres: Callable[[Database], T]
) -> AsyncIterator[T]:
    """``twin()``, or ``postgres(db)`` on a fresh migrated database, for ``backend``."""
    if backend == "memory":
        yield twin()
        return
    async with migrated_database(admin_url) as db:
        yield postgres(db)
