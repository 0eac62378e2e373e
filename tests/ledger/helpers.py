"""Shared builders for the ledger tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from penpay.actors.ledger import DEFAULT_CHART, Chart, Ledger, Transfer, TransferKind
from penpay.engine import EngineConfig, InMemoryJournal, Journal
from penpay.engine.testing import open_test_system
from penpay.money import Currency
from penpay.storage.transfers_memory import InMemoryTransferStore

_NAMESPACE = uuid.UUID("6f1c8c39-3a7e-4f55-9d1a-6e1f0c4b2a10")


def tid(name: str | int) -> str:
    """A stable transfer id for a readable test name."""
    return str(uuid.uuid5(_NAMESPACE, str(name)))


def transfer(
    name: str | int,
    debit: str,
    credit: str,
    amount_cents: int,
    currency: Currency | None = None,
    *,
    kind: TransferKind = TransferKind.POSTED,
    pending: str | int | None = None,
    code: str = "test",
    chart: Chart = DEFAULT_CHART,
) -> Transfer:
    return Transfer(
        id=tid(name),
        debit_account=debit,
        credit_account=credit,
        amount_cents=amount_cents,
        currency=currency if currency is not None else chart[debit].currency,
        kind=kind,
        pending_id=tid(pending) if pending is not None else None,
        code=code,
    )


@asynccontextmanager
async def open_ledger(
    *,
    store: InMemoryTransferStore | None = None,
    journal: Journal | None = None,
    chart: Chart = DEFAULT_CHART,
    seed: int = 0,
    config: EngineConfig | None = None,
) -> AsyncIterator[Ledger]:
    """A started ledger over an in-memory journal and store (both may be shared across runs)."""
    async with open_test_system(
        seed=seed,
        journal=journal if journal is not None else InMemoryJournal(),
        config=config,
    ) as system:
        ledger = Ledger(system, store if store is not None else InMemoryTransferStore(), chart)
        await ledger.start()
        yield ledger


async def fund(ledger: Ledger, *, kes_cents: int = 1_000_000, usd_cents: int = 100_000) -> None:
    """Owner equity funds both floats."""
    result = await ledger.create_transfers(
        [
            transfer("fund-kes", "mpesa_float", "owner_equity_kes", kes_cents),
            transfer("fund-usd", "deriv_float", "owner_equity_usd", usd_cents),
        ]
    )
    assert result.ok, result
