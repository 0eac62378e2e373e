"""The ledger of record on PostgreSQL: :class:`PgTransferStore`.

Implements :class:`penpay.actors.ledger.store.TransferStore` (re-exported
here) over the tables of migration ``0100_ledger.sql``. Commits from every
caller go through one writer task that packs many linked groups into one
statement (``ledger_commit_batch``): one round trip and one transaction for
up to ``batch_rows_max`` rows, each group still all-or-nothing and decided
independently of the others. A batch closes when full or ``batch_window_ms``
after its first group arrived.

Outcomes, per caller:

- ``committed`` / ``aborted`` / ``duplicate`` as the statement reports;
- the database refused a row (a CHECK or foreign key): the batch is rolled
  back and its groups are retried one by one, so only the offending group
  gets :class:`TransferRowRefused`;
- the connection failed before the commit was confirmed:
  :class:`TransferStoreUnavailable` for every group of the batch; the
  outcome is unknown until :meth:`resolve_groups` decides it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio

from penpay.actors.ledger.chart import Chart
from penpay.actors.ledger.errors import TransferRowRefused, TransferStoreUnavailable
from penpay.actors.ledger.model import Transfer, TransferKind
from penpay.actors.ledger.store import CommitOutcome, TransferPage, TransferStore
from penpay.money import Currency
from penpay.storage.pg import (
    Connection,
    ConnectionLost,
    Database,
    DatabaseError,
    QueryFailed,
    Record,
)
from penpay.storage.statistics import ANALYZE_MIN_ROWS, GrowthAnalyzer

__all__ = ["PgTransferStore", "TransferStore", "open_pg_transfer_store"]

log = logging.getLogger("penpay.storage.transfers")

_COLUMNS = (
    "seq, id::text AS id, debit_account, credit_account, amount_cents, currency, kind, "
    "pending_id::text AS pending_id, transaction_id, code, timestamp_ms, "
    "linked_group::text AS linked_group"
)
_COMMIT_BATCH = (
    "SELECT idx, outcome FROM ledger_commit_batch($1::uuid[], $2::int[], $3::uuid[], $4::text[], "
    "$5::text[], $6::bigint[], $7::text[], $8::text[], $9::uuid[], $10::text[], $11::text[], "
    "$12::bigint[])"
)
_RESOLVE = "SELECT group_id::text AS group_id, committed FROM ledger_resolve_groups($1::uuid[])"
_GET = f"SELECT {_COLUMNS} FROM ledger_transfers WHERE id = ANY($1::uuid[])"
_GET_RESOLUTIONS = f"SELECT {_COLUMNS} FROM ledger_transfers WHERE pending_id = ANY($1::uuid[])"
_BY_ACCOUNT = f"""
SELECT {_COLUMNS} FROM (
    (SELECT * FROM ledger_transfers WHERE debit_account = $1 AND seq > $2 ORDER BY seq LIMIT $3)
    UNION ALL
    (SELECT * FROM ledger_transfers WHERE credit_account = $1 AND seq > $2 ORDER BY seq LIMIT $3)
) t ORDER BY seq LIMIT $3
"""
_SCAN = f"SELECT {_COLUMNS} FROM ledger_transfers WHERE seq > $1 ORDER BY seq LIMIT $2"
_REGISTER = """
INSERT INTO ledger_accounts (code, currency)
SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (code) DO NOTHING
"""
_ACCOUNTS = "SELECT code, currency FROM ledger_accounts WHERE code = ANY($1::text[])"

#: SQLSTATE of a unique violation: an id or resolution stored by another writer.
_UNIQUE_VIOLATION = "23505"


def _transfer(row: Record) -> Transfer:
    return Transfer(
        id=row["id"],
        debit_account=row["debit_account"],
        credit_account=row["credit_account"],
        amount_cents=row["amount_cents"],
        currency=Currency(row["currency"]),
        kind=TransferKind(row["kind"]),
        pending_id=row["pending_id"],
        transaction_id=row["transaction_id"],
        code=row["code"],
        timestamp_ms=row["timestamp_ms"],
        linked_group=row["linked_group"],
    )


def _page(rows: list[Record], limit: int) -> TransferPage:
    transfers = [_transfer(row) for row in rows]
    return TransferPage(transfers, rows[-1]["seq"] if len(rows) == limit else None)


class _Commit:
    """One caller's linked group, waiting for the writer's verdict."""

    __slots__ = ("abandoned", "done", "error", "group_id", "outcome", "transfers")

    def __init__(self, group_id: str, transfers: Sequence[Transfer]) -> None:
        self.group_id = group_id
        self.transfers = transfers
        self.done = trio.Event()
        self.outcome = CommitOutcome.ABORTED
        self.error: Exception | None = None
        self.abandoned = False

    def finish(self, outcome: CommitOutcome) -> None:
        self.outcome = outcome
        self.done.set()

    def fail(self, error: Exception) -> None:
        self.error = error
        self.done.set()

    def ids(self) -> set[str]:
        """The transfer ids and pending ids this group writes or claims."""
        return {t.id for t in self.transfers} | {
            t.pending_id for t in self.transfers if t.pending_id is not None
        }


class PgTransferStore:
    """The transfer store on PostgreSQL. Open with :func:`open_pg_transfer_store`."""

    def __init__(
        self,
        db: Database,
        *,
        batch_rows_max: int = 2000,
        batch_window_ms: float = 1.0,
        queue_groups_max: int = 20_000,
        batch_timeout_s: float = 30.0,
        reconnect_backoff_s: float = 0.1,
        analyze_min_rows: int = ANALYZE_MIN_ROWS,
    ) -> None:
        assert batch_rows_max >= 1, batch_rows_max
        self._db = db
        self.batch_rows_max = batch_rows_max
        self.batch_window_ms = batch_window_ms
        self.batch_timeout_s = batch_timeout_s
        self.reconnect_backoff_s = reconnect_backoff_s
        self._send, self._recv = trio.open_memory_channel[_Commit](queue_groups_max)
        #: Groups held back from a batch that already had one of their ids.
        self._deferred: list[_Commit] = []
        self._conn: Connection | None = None
        #: Batches and rows committed; for metrics and benchmarks.
        self.batches_committed = 0
        self.rows_committed = 0
        #: Keeps the plans of the writer's foreign-key checks on the indexes
        #: as the ledger grows (run beside the writer by open_pg_transfer_store).
        self.statistics = GrowthAnalyzer(
            db, ("ledger_transfers", "ledger_groups"), min_rows=analyze_min_rows
        )

    # ------------------------------------------------------- TransferStore

    async def register_accounts(self, chart: Chart) -> None:
        codes = list(chart)
        currencies = [chart[code].currency.value for code in codes]
        try:
            await self._db.execute(_REGISTER, codes, currencies)
            rows = await self._db.fetch(_ACCOUNTS, codes)
        except DatabaseError as exc:
            raise TransferStoreUnavailable(f"registering accounts: {exc}") from exc
        for row in rows:
            if row["currency"] != chart[row["code"]].currency.value:
                raise TransferStoreUnavailable(
                    f"account {row['code']!r} is stored as {row['currency']}, "
                    f"the chart says {chart[row['code']].currency}"
                )

    async def commit(self, group_id: str, transfers: Sequence[Transfer]) -> CommitOutcome:
        assert transfers, "a group holds at least one transfer"
        request = _Commit(group_id, transfers)
        try:
            try:
                self._send.send_nowait(request)  # no schedule point unless the queue is full
            except trio.WouldBlock:
                await self._send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise TransferStoreUnavailable("the transfer writer is closed") from None
        try:
            await request.done.wait()
        except BaseException:
            request.abandoned = True  # not taken yet: the writer skips it
            raise
        if request.error is not None:
            raise request.error
        return request.outcome

    async def resolve_groups(self, group_ids: Sequence[str]) -> Mapping[str, bool]:
        rows = await self._read(_RESOLVE, list(group_ids))
        return {row["group_id"]: row["committed"] for row in rows}

    async def get_transfers(self, ids: Sequence[str]) -> Mapping[str, Transfer]:
        rows = await self._read(_GET, list(ids))
        return {row["id"]: _transfer(row) for row in rows}

    async def get_resolutions(self, pending_ids: Sequence[str]) -> Mapping[str, Transfer]:
        rows = await self._read(_GET_RESOLUTIONS, list(pending_ids))
        return {row["pending_id"]: _transfer(row) for row in rows}

    async def account_transfers(
        self, account: str, *, after_cursor: int = 0, limit: int = 100
    ) -> TransferPage:
        return _page(await self._read(_BY_ACCOUNT, account, after_cursor, limit), limit)

    async def scan(self, *, after_cursor: int = 0, limit: int = 1000) -> TransferPage:
        return _page(await self._read(_SCAN, after_cursor, limit), limit)

    async def _read(self, sql: str, *args: Any) -> list[Record]:
        """A read, bounded like a commit: a database that hangs is one that is down."""
        rows: list[Record] | None = None
        try:
            with trio.move_on_after(self.batch_timeout_s):
                rows = await self._db.fetch(sql, *args)
        except DatabaseError as exc:
            raise TransferStoreUnavailable(f"transfer store read failed: {exc}") from exc
        if rows is None:
            limit = f"{self.batch_timeout_s:g} s"
            raise TransferStoreUnavailable(f"transfer store read took over {limit}")
        return rows

    # ------------------------------------------------------------- writer

    async def _next_batch(self) -> list[_Commit] | None:
        """The next batch: groups that share no transfer or pending id.

        ``ledger_commit_batch`` reads a group as a duplicate when an earlier
        group of its batch holds one of its ids, even if that group is itself
        refused and writes nothing; the in-memory twin, deciding one group at
        a time, would commit it. So a group sharing an id with the batch
        waits for the next one, and both stores decide alike.
        """
        if self._deferred:
            first = self._deferred.pop(0)
        else:
            try:
                first = await self._recv.receive()
            except trio.EndOfChannel:
                return None
        batch, taken = [first], first.ids()
        rows = len(first.transfers)
        waiting, self._deferred = self._deferred, []
        for held in waiting:  # those deferred before, in their order
            if rows < self.batch_rows_max and taken.isdisjoint(held.ids()):
                batch.append(held)
                taken |= held.ids()
                rows += len(held.transfers)
            else:
                self._deferred.append(held)
        deadline = trio.current_time() + self.batch_window_ms / 1000
        while rows < self.batch_rows_max:
            request: _Commit | None = None
            try:
                request = self._recv.receive_nowait()
            except trio.WouldBlock:
                with trio.move_on_at(deadline):
                    with suppress(trio.EndOfChannel):
                        request = await self._recv.receive()
            except trio.EndOfChannel:
                pass
            if request is None:
                break
            if not taken.isdisjoint(request.ids()):
                self._deferred.append(request)
                continue
            batch.append(request)
            taken |= request.ids()
            rows += len(request.transfers)
        return [r for r in batch if not r.abandoned]

    async def _connection(self) -> Connection:
        if self._conn is None or self._conn.is_closed():
            try:
                conn = await self._db.connect()
                await conn.execute("SET synchronous_commit = on")
            except DatabaseError as exc:
                raise TransferStoreUnavailable(f"transfer writer cannot connect: {exc}") from exc
            self._conn = conn
        return self._conn

    async def _write(self, batch: list[_Commit]) -> list[CommitOutcome]:
        columns: list[list[Any]] = [[] for _ in range(11)]
        for index, request in enumerate(batch, start=1):
            for t in request.transfers:
                for column, value in zip(
                    columns,
                    (
                        index,
                        t.id,
                        t.debit_account,
                        t.credit_account,
                        t.amount_cents,
                        t.currency.value,
                        t.kind.value,
                        t.pending_id,
                        t.transaction_id,
                        t.code,
                        t.timestamp_ms,
                    ),
                    strict=True,
                ):
                    column.append(value)
        conn = await self._connection()
        rows: list[Record] | None = None
        with trio.move_on_after(self.batch_timeout_s):
            rows = await conn.fetch(_COMMIT_BATCH, [r.group_id for r in batch], *columns)
        if rows is None:
            raise ConnectionLost(f"commit batch took over {self.batch_timeout_s:g} s")
        outcomes = [CommitOutcome.ABORTED] * len(batch)
        for row in rows:
            outcomes[row["idx"] - 1] = CommitOutcome(row["outcome"])
        rows_written = sum(
            len(r.transfers)
            for r, o in zip(batch, outcomes, strict=True)
            if o is CommitOutcome.COMMITTED
        )
        self.batches_committed += 1
        self.rows_committed += rows_written
        self.statistics.added(rows_written)
        return outcomes

    async def _write_one_by_one(self, batch: list[_Commit]) -> None:
        """After a refused batch: retry each group alone so only the bad one fails."""
        for request in batch:
            try:
                [outcome] = await self._write([request])
            except QueryFailed as exc:
                if exc.sqlstate == _UNIQUE_VIOLATION:
                    request.finish(CommitOutcome.DUPLICATE)
                else:
                    request.fail(TransferRowRefused(f"group {request.group_id}: {exc}"))
                continue
            request.finish(outcome)

    async def run_writer(self) -> None:
        """The writer loop; returns once the store is closed and drained."""
        while True:
            batch = await self._next_batch()
            if batch is None:
                break
            if not batch:
                continue
            try:
                try:
                    outcomes = await self._write(batch)
                except QueryFailed as exc:
                    log.warning("commit batch refused (%s); retrying its groups alone", exc)
                    await self._write_one_by_one(batch)
                else:
                    for request, outcome in zip(batch, outcomes, strict=True):
                        request.finish(outcome)
            except (DatabaseError, TransferStoreUnavailable) as exc:
                message = f"transfer commit not confirmed (outcome unknown): {exc}"
                for request in batch:
                    if not request.done.is_set():
                        request.fail(TransferStoreUnavailable(message))
                log.error("%s (batch of %d groups)", message, len(batch))
                await self._drop_connection()
                await trio.sleep(self.reconnect_backoff_s)
            except BaseException as exc:
                for request in [*batch, *self._deferred]:
                    if not request.done.is_set():
                        request.fail(TransferStoreUnavailable(f"transfer writer stopped: {exc!r}"))
                raise
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await conn.aclose()

    def close(self) -> None:
        """Refuse new commits; the writer finishes what is queued, then returns."""
        self._send.close()


@asynccontextmanager
async def open_pg_transfer_store(db: Database, **options: Any) -> AsyncIterator[PgTransferStore]:
    """A :class:`PgTransferStore` with its writer running for the duration of the block."""
    store = PgTransferStore(db, **options)

    async def write_then_stop_statistics() -> None:
        try:
            await store.run_writer()
        finally:
            nursery.cancel_scope.cancel()  # the writer is done: nothing more to analyse

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_then_stop_statistics, name="penpay.storage.transfers.writer")
        nursery.start_soon(store.statistics.run, name="penpay.storage.transfers.statistics")
        try:
            yield store
        finally:
            store.close()
