"""A connection that dies after PostgreSQL received a statement: outcome unknown.

asyncpg reports a socket closed mid-statement as ConnectionDoesNotExistError,
a PostgresError of SQLSTATE class 08. Read as "the server refused it", the
transfer writer sent the batch again group by group, found the group's own
(committed) rows, answered DUPLICATE, and the ledger released the holds of
transfers the ledger of record had committed: the account actors and the
rows disagreed for good.
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

import asyncpg
import pytest
import trio

from penpay.actors.ledger import Ledger
from penpay.actors.ledger.errors import LedgerUnavailable, TransferStoreUnavailable
from penpay.engine.testing import open_test_system
from penpay.storage import pg
from penpay.storage.testing import fresh_database
from penpay.storage.transfers import open_pg_transfer_store
from tests.ledger.helpers import fund, tid, transfer
from tests.storage.proxy import PgProxy
from tests.storage.test_faults import migrated_database_via

pytestmark = pytest.mark.storage


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CrashShutdownError("the database system is in recovery mode"),
        asyncpg.IdleSessionTimeoutError("terminating connection due to idle-session timeout"),
    ],
)
def test_a_connection_ended_by_the_server_is_lost_not_refused(error: Exception) -> None:
    assert isinstance(pg._translate(error), pg.ConnectionLost)


def test_a_refused_statement_is_still_refused() -> None:
    refused = pg._translate(asyncpg.UniqueViolationError("duplicate key"))
    assert isinstance(refused, pg.QueryFailed) and refused.sqlstate == "23505"


async def test_the_ledger_keeps_the_holds_of_a_group_whose_commit_ack_was_lost(
    pg_admin_url: str,
) -> None:
    proxy = PgProxy(pg_admin_url)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with (
            fresh_database(pg_admin_url) as url,
            migrated_database_via(proxy.url(urlsplit(url).path.lstrip("/"))) as db,
            open_pg_transfer_store(db, batch_window_ms=0.0) as store,
            open_test_system(seed=3) as system,
        ):
            ledger = Ledger(system, store)
            await ledger.start()
            await fund(ledger)
            proxy.cut_after_request(300)  # the batch reaches the server; its answer is lost
            with contextlib.suppress(LedgerUnavailable):  # or it settled the outcome itself
                await ledger.create_transfers(
                    [transfer("pay", "fx_position_usd", "deriv_float", 700)]
                )
            with trio.fail_after(30):
                while True:
                    try:
                        stored = await store.get_transfers([tid("pay")])
                        break
                    except TransferStoreUnavailable:
                        await trio.sleep(0.05)
            assert tid("pay") in stored  # the ledger of record has it...
            report = await ledger.reconcile()
            assert report.clean, report.drift  # ...and so do the account actors
        nursery.cancel_scope.cancel()
