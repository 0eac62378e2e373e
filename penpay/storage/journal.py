"""The PostgreSQL journal: group-committed appends, snapshots, the global feed.

Appends from every actor go through one writer task that packs them into one
database statement (``journal_append_batch``, see migration 0001): one round
trip and one commit for up to ``batch_events_max`` events. A batch closes
when it holds ``batch_events_max`` events or ``batch_window_ms`` after its
first request arrived, whichever is first. Each caller resumes only when its
own outcome is known:

- committed: its new last sequence;
- its expected sequence was stale: :class:`ConcurrencyConflict`, and none of
  its events were written — the other requests in the batch are unaffected;
- the connection failed before the commit was confirmed:
  :class:`JournalUnavailable` for every request of the batch. The outcome is
  then *unknown* (the commit may have landed); the actor restarts, recovers
  from what the journal really holds, and its next append either continues
  correctly or conflicts. Nobody is ever told "durable" for an event that
  did not commit.

The writer keeps one dedicated connection, reconnecting with a bounded
back-off after a failure; reads use the pool.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from penpay.engine.errors import ConcurrencyConflict, JournalUnavailable
from penpay.engine.persistence import EventRecord, Snapshot, StoredEvent
from penpay.storage.pg import Connection, ConnectionLost, Database, DatabaseError, Record

log = logging.getLogger("penpay.storage.journal")

#: How the writer's connection appears in ``pg_stat_activity``.
WRITER_APPLICATION_NAME = "penpay-journal-writer"

_APPEND_BATCH = "SELECT req, actual FROM journal_append_batch($1, $2, $3, $4, $5, $6)"
_EVENT_COLUMNS = (
    "persistence_id, sequence, type, version, payload, position, "
    "(extract(epoch FROM recorded_at) * 1000)::bigint AS recorded_at_ms"
)
_READ_EVENTS = (
    f"SELECT {_EVENT_COLUMNS} FROM journal "
    "WHERE persistence_id = $1 AND sequence > $2 ORDER BY sequence"
)
_READ_ALL = f"SELECT {_EVENT_COLUMNS} FROM journal WHERE position > $1 ORDER BY position LIMIT $2"
_LOAD_SNAPSHOT = (
    "SELECT persistence_id, sequence, version, payload FROM snapshots WHERE persistence_id = $1"
)
_SAVE_SNAPSHOT = """
INSERT INTO snapshots (persistence_id, sequence, version, payload)
VALUES ($1, $2, $3, $4)
ON CONFLICT (persistence_id) DO UPDATE
   SET sequence = EXCLUDED.sequence, version = EXCLUDED.version,
       payload = EXCLUDED.payload, saved_at = now()
 WHERE snapshots.sequence <= EXCLUDED.sequence
"""


class _Append:
    """One caller's append request, waiting for the writer's verdict.

    The caller parks on trio's low-level primitives rather than a
    ``trio.Event``: with thousands of appends a second, the event object and
    its parking lot were a measurable share of the journal's cost.
    """

    __slots__ = (
        "_task",
        "abandoned",
        "error",
        "events",
        "expected",
        "finished",
        "persistence_id",
        "result",
    )

    def __init__(self, persistence_id: str, expected: int, events: Sequence[EventRecord]) -> None:
        self.persistence_id = persistence_id
        self.expected = expected
        self.events = events
        self.result = -1
        self.error: Exception | None = None
        self.abandoned = False
        self.finished = False
        self._task: trio.lowlevel.Task | None = None

    def succeed(self, sequence: int) -> None:
        self.result = sequence
        self._finish()

    def fail(self, error: Exception) -> None:
        self.error = error
        self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self._task is not None:
            task, self._task = self._task, None
            trio.lowlevel.reschedule(task)

    async def wait(self) -> int:
        """The new last sequence once the writer has decided; raises its error."""
        if not self.finished:
            self._task = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                self._task = None
                self.abandoned = True  # not yet taken: the writer will skip it
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        else:
            await trio.lowlevel.checkpoint()
        if self.error is not None:
            raise self.error
        return self.result


def _stored(row: Record) -> StoredEvent:
    return StoredEvent(
        persistence_id=row["persistence_id"],
        sequence=row["sequence"],
        type=row["type"],
        version=row["version"],
        payload=bytes(row["payload"]),
        position=row["position"],
        recorded_at_ms=row["recorded_at_ms"],
    )


class PgJournal:
    """The :class:`penpay.engine.Journal` on PostgreSQL. Open with :func:`open_pg_journal`."""

    def __init__(
        self,
        db: Database,
        *,
        batch_events_max: int = 500,
        batch_window_ms: float = 2.0,
        queue_requests_max: int = 10_000,
        batch_timeout_s: float = 30.0,
        reconnect_backoff_min_s: float = 0.05,
        reconnect_backoff_max_s: float = 5.0,
        writer_connections: int = 1,
    ) -> None:
        assert batch_events_max >= 1, batch_events_max
        assert writer_connections >= 1, writer_connections
        assert batch_window_ms >= 0, batch_window_ms
        self._db = db
        self.batch_events_max = batch_events_max
        self.batch_window_ms = batch_window_ms
        self.batch_timeout_s = batch_timeout_s
        self.reconnect_backoff_min_s = reconnect_backoff_min_s
        self.reconnect_backoff_max_s = reconnect_backoff_max_s
        self._send, self._recv = trio.open_memory_channel[_Append](queue_requests_max)
        self._deferred: deque[_Append] = deque()
        self.writer_connections = writer_connections
        self._committed = trio.Event()
        #: Batches committed and events written; for metrics and benchmarks.
        self.batches_committed = 0
        self.events_committed = 0

    # ------------------------------------------------------------ Journal API

    async def append(
        self, persistence_id: str, expected_sequence: int, events: Sequence[EventRecord]
    ) -> int:
        request = _Append(persistence_id, expected_sequence, events)
        try:
            try:
                self._send.send_nowait(request)  # the wait below is the checkpoint
            except trio.WouldBlock:
                await self._send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise JournalUnavailable("the journal writer is closed") from None
        return await request.wait()

    async def read_events(
        self, persistence_id: str, after_sequence: int = 0
    ) -> Sequence[StoredEvent]:
        rows = await self._read(_READ_EVENTS, persistence_id, after_sequence)
        return [_stored(row) for row in rows]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> Sequence[StoredEvent]:
        """Committed events of every actor in position order (the outbox feed).

        Positions are assigned under a lock held until commit, so a reader
        never sees a higher position before a lower one has committed.
        """
        rows = await self._read(_READ_ALL, after_position, limit)
        return [_stored(row) for row in rows]

    async def load_snapshot(self, persistence_id: str) -> Snapshot | None:
        rows = await self._read(_LOAD_SNAPSHOT, persistence_id)
        if not rows:
            return None
        row = rows[0]
        return Snapshot(
            persistence_id=row["persistence_id"],
            sequence=row["sequence"],
            version=row["version"],
            payload=bytes(row["payload"]),
        )

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        try:
            await self._db.execute(
                _SAVE_SNAPSHOT,
                snapshot.persistence_id,
                snapshot.sequence,
                snapshot.version,
                snapshot.payload,
            )
        except DatabaseError as exc:
            raise JournalUnavailable(f"snapshot of {snapshot.persistence_id!r}: {exc}") from exc

    async def wait_for_commit(self) -> None:
        """Return after the next batch commits (lets an in-process relay wake early)."""
        await self._committed.wait()

    async def _read(self, sql: str, *args: Any) -> list[Record]:
        try:
            return await self._db.fetch(sql, *args)
        except DatabaseError as exc:
            raise JournalUnavailable(f"journal read failed: {exc}") from exc

    # ----------------------------------------------------------------- writer

    async def _next_batch(self) -> list[_Append] | None:
        """Wait for work, then gather requests until full or the window closes.

        Two requests for one persistence id never share a batch (the second
        is deferred to the next one, where it sees the first's outcome), so
        the batch statement can check every expected sequence independently.
        """
        batch: list[_Append] = []
        ids: set[str] = set()
        events = 0
        carried: deque[_Append] = deque()

        def take(request: _Append) -> None:
            nonlocal events
            if request.abandoned:
                return
            if request.persistence_id in ids:
                carried.append(request)
                return
            ids.add(request.persistence_id)
            batch.append(request)
            events += len(request.events)

        while self._deferred and events < self.batch_events_max:
            take(self._deferred.popleft())
        if not batch:
            try:
                take(await self._recv.receive())
            except trio.EndOfChannel:
                self._deferred.extendleft(reversed(carried))
                return None
        deadline = trio.current_time() + self.batch_window_ms / 1000
        while events < self.batch_events_max:
            try:
                take(self._recv.receive_nowait())
                continue
            except trio.WouldBlock:
                pass
            except trio.EndOfChannel:
                break
            with trio.move_on_at(deadline):
                try:
                    take(await self._recv.receive())
                    continue
                except trio.EndOfChannel:
                    break
            break
        self._deferred.extendleft(reversed(carried))
        return batch

    async def _connect(self) -> Connection:
        try:
            conn = await self._db.connect(application_name=WRITER_APPLICATION_NAME)
            # Durability is the point of the journal, whatever the server default.
            await conn.execute("SET synchronous_commit = on")
        except DatabaseError as exc:
            raise JournalUnavailable(f"journal writer cannot connect: {exc}") from exc
        log.info("journal writer connected")
        return conn

    async def _write(self, conn: Connection, batch: list[_Append]) -> None:
        ids: list[str] = []
        expected: list[int] = []
        e_req: list[int] = []
        types: list[str] = []
        versions: list[int] = []
        payloads: list[bytes] = []
        for index, request in enumerate(batch, start=1):
            ids.append(request.persistence_id)
            expected.append(request.expected)
            for record in request.events:
                e_req.append(index)
                types.append(record.type)
                versions.append(record.version)
                payloads.append(record.payload)
        rows: list[Record] | None = None
        with trio.move_on_after(self.batch_timeout_s):
            rows = await conn.fetch(_APPEND_BATCH, ids, expected, e_req, types, versions, payloads)
        if rows is None:
            raise ConnectionLost(f"append batch took over {self.batch_timeout_s:g} s")
        assert len(rows) == len(batch), (len(rows), len(batch))
        written = 0
        for row in rows:
            request = batch[row["req"] - 1]
            actual = row["actual"]
            if actual == request.expected:
                written += len(request.events)
                request.succeed(request.expected + len(request.events))
            else:
                request.fail(ConcurrencyConflict(request.persistence_id, request.expected, actual))
        self.batches_committed += 1
        self.events_committed += written
        self._committed.set()
        self._committed = trio.Event()

    @staticmethod
    async def _drop(conn: Connection | None) -> None:
        if conn is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await conn.aclose()

    async def _writer_loop(self) -> None:
        """One writer connection: take a batch, commit it, repeat until closed.

        Several loops run at once so that one batch is being built and sent
        while another commits; the journal_head lock still commits them one
        at a time, in position order.
        """
        conn: Connection | None = None
        backoff_s = self.reconnect_backoff_min_s
        try:
            while True:
                batch = await self._next_batch()
                if batch is None:
                    return
                if not batch:
                    continue
                try:
                    if conn is None or conn.is_closed():
                        conn = await self._connect()
                    await self._write(conn, batch)
                    backoff_s = self.reconnect_backoff_min_s
                except (DatabaseError, JournalUnavailable) as exc:
                    unknown = isinstance(exc, ConnectionLost)
                    message = (
                        f"journal connection lost before the commit was confirmed: {exc}"
                        if unknown
                        else f"journal append failed, nothing committed: {exc}"
                    )
                    for request in batch:
                        if not request.finished:
                            request.fail(JournalUnavailable(message))
                    log.error("%s (batch of %d appends)", message, len(batch))
                    if unknown or isinstance(exc, JournalUnavailable):
                        await self._drop(conn)
                        conn = None
                        await trio.sleep(backoff_s)
                        backoff_s = min(backoff_s * 2, self.reconnect_backoff_max_s)
                except BaseException as exc:
                    for request in batch:
                        if not request.finished:
                            request.fail(JournalUnavailable(f"journal writer stopped: {exc!r}"))
                    raise
        finally:
            await self._drop(conn)

    async def run_writer(self) -> None:
        """The writer loops; returns once the journal is closed and drained."""
        async with trio.open_nursery() as nursery:
            for slot in range(self.writer_connections):
                nursery.start_soon(self._writer_loop, name=f"penpay.storage.journal.writer-{slot}")

    def close(self) -> None:
        """Refuse new appends; the writer finishes what is queued, then returns."""
        self._send.close()


@asynccontextmanager
async def open_pg_journal(
    db: Database,
    *,
    batch_events_max: int = 500,
    batch_window_ms: float = 2.0,
    **options: Any,
) -> AsyncIterator[PgJournal]:
    """A :class:`PgJournal` with its writer running for the duration of the block.

    On exit the queue is drained (every queued caller gets its outcome)
    before the writer's connection is closed.
    """
    journal = PgJournal(
        db, batch_events_max=batch_events_max, batch_window_ms=batch_window_ms, **options
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run_writer, name="penpay.storage.journal.writer")
        try:
            yield journal
        finally:
            journal.close()
