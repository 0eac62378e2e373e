"""Fixtures: a transfer store of each kind for the shared contract tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from penpay.actors.ledger import DEFAULT_CHART
from penpay.actors.ledger.store import TransferStore
from penpay.storage.pg import Database
from penpay.storage.testing import migrated_database
from penpay.storage.transfers import open_pg_transfer_store
from penpay.storage.transfers_memory import InMemoryTransferStore
from tests.storage.backends import EACH_BACKEND


@pytest.fixture
async def pg_db() -> AsyncIterator[Database]:
    """A fresh database with every migration applied (the storage test helper)."""
    async with migrated_database() as db:
        yield db


@pytest.fixture(params=EACH_BACKEND)
async def any_store(request: pytest.FixtureRequest) -> AsyncIterator[TransferStore]:
    """Each implementation of the store, with the default chart registered."""
    if request.param == "memory":
        store: TransferStore = InMemoryTransferStore()
        await store.register_accounts(DEFAULT_CHART)
        yield store
        return
    async with migrated_database() as db, open_pg_transfer_store(db, batch_window_ms=0.5) as pg:
        await pg.register_accounts(DEFAULT_CHART)
        yield pg
