"""One contract for the raw callback store, against PostgreSQL and the twin."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from penpay.storage.raw_callbacks import (
    InMemoryRawCallbacks,
    PgRawCallbacks,
    RawCallback,
    RawCallbackStore,
)
from tests.storage.backends import EACH_BACKEND, twin_or_postgres

TX_A = "0193a000-0000-7000-8000-00000000000a"
TX_B = "0193a000-0000-7000-8000-00000000000b"


@pytest.fixture(params=EACH_BACKEND)
async def store(
    request: pytest.FixtureRequest, pg_admin_url: str
) -> AsyncIterator[RawCallbackStore]:
    async with twin_or_postgres(
        request.param, pg_admin_url, InMemoryRawCallbacks, PgRawCallbacks
    ) as callbacks:
        yield callbacks


def callback(kind: str, tx: str, at_ms: int, body: bytes) -> RawCallback:
    return RawCallback(kind=kind, transaction_id=tx, source="196.201.214.200",
                       received_at_ms=at_ms, body=body)


async def test_callbacks_are_kept_verbatim_per_transaction_in_arrival_order(
    store: RawCallbackStore,
) -> None:
    first = callback("stk", TX_A, 1_764_000_000_123, b'{"Body": {"stkCallback": {}}}')
    other = callback("b2c_result", TX_B, 1_764_000_001_000, b"not even json \xff")
    again = callback("stk", TX_A, 1_764_000_002_456, b'{"Body": {"stkCallback": {}}}')
    status = callback("b2c_status_result", TX_A, 1_764_000_003_000, b"{}")
    for c in (first, other, again, status):
        await store.store(c)
    assert await store.for_transaction(TX_A) == [first, again, status]
    assert await store.for_transaction(TX_B) == [other]
    assert await store.for_transaction("0193a000-0000-7000-8000-0000000000ff") == []


async def test_an_unknown_kind_is_refused(store: RawCallbackStore) -> None:
    with pytest.raises(ValueError, match="smoke_signal"):
        await store.store(callback("smoke_signal", TX_A, 1, b"{}"))
    assert await store.for_transaction(TX_A) == []
