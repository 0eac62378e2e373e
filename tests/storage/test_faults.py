"""Storage under failure: dropped connections, a late database, racing activations."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import asyncpg
import pytest
import trio

from penpay.engine import (
    ActorParked,
    ActorStatus,
    ActorStopped,
    ConcurrencyConflict,
    EventRecord,
    JournalUnavailable,
    open_actor_system,
)
from penpay.errors import ConfigurationError
from penpay.storage import pg
from penpay.storage.connect import Readiness, connect_with_retry, redact
from penpay.storage.journal import WRITER_APPLICATION_NAME, open_pg_journal
from penpay.storage.pg import ConnectionLost, Database, DatabaseError
from penpay.storage.testing import fresh_database, with_database
from tests.storage.actors import Deposit, Tally, Total
from tests.storage.proxy import PgProxy
from tests.storage.waiting import POLL_S, wait_until_writer_blocked

pytestmark = pytest.mark.storage

def ev(n: int) -> EventRecord:
    return EventRecord(type="t", version=1, payload=str(n).encode())


async def test_connection_killed_mid_batch_fails_that_batch_only_and_recovers(
    db: Database,
) -> None:
    async with open_pg_journal(db, batch_window_ms=1.0) as journal:
        for n in range(50):
            await journal.append(f"k/{n}", 0, [ev(0)])
        outcomes: dict[str, object] = {}

        async def writer(pid: str) -> None:
            try:
                outcomes[pid] = await journal.append(pid, 1, [ev(1), ev(2)])
            except JournalUnavailable as exc:
                outcomes[pid] = exc

        # Hold the lock every batch takes first, so the batch is provably in
        # flight inside the server when its connection is killed.
        async with trio.open_nursery() as nursery, db.transaction() as blocker:
            await blocker.execute("SELECT 1 FROM journal_head WHERE id = 1 FOR UPDATE")
            for n in range(50):
                nursery.start_soon(writer, f"k/{n}")
            backend = await wait_until_writer_blocked(db)
            assert await db.fetchval("SELECT pg_terminate_backend($1)", backend)
        failed = [pid for pid, o in outcomes.items() if isinstance(o, JournalUnavailable)]
        durable = [pid for pid, o in outcomes.items() if o == 3]
        assert failed and len(failed) + len(durable) == 50
        for pid in failed:  # told "not durable": and indeed nothing was committed
            assert [e.sequence for e in await journal.read_events(pid)] == [1]
        for pid in durable:  # told "durable": and it is
            assert [e.sequence for e in await journal.read_events(pid)] == [1, 2, 3]
        # The writer reconnects; appends carry on from what really committed.
        for pid in failed:
            assert await journal.append(pid, 1, [ev(9)]) == 2


async def test_cut_network_under_load_never_reports_uncommitted_events(
    pg_admin_url: str,
) -> None:
    proxy = PgProxy(pg_admin_url)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with fresh_database(pg_admin_url) as url, migrated_database_via(
            proxy.url(urlsplit(url).path.lstrip("/"))
        ) as db, open_pg_journal(db, batch_window_ms=1.0) as journal:
            acked: dict[str, int] = {}
            unknown = 0
            batches_seen = trio.Event()

            async def actor(n: int) -> None:
                nonlocal unknown
                pid, sequence = f"load/{n}", 0
                for i in range(20):
                    try:
                        sequence = await journal.append(pid, sequence, [ev(i)])
                        acked[pid] = sequence
                        if journal.batches_committed >= 5:
                            batches_seen.set()
                    except (JournalUnavailable, ConcurrencyConflict):
                        # Unknown outcome (or a commit that landed after we
                        # re-read): the journal says where the stream is.
                        unknown += 1
                        sequence = len(await _read_retrying(journal, pid))

            async with trio.open_nursery() as load:
                for n in range(100):
                    load.start_soon(actor, n)
                await batches_seen.wait()
                proxy.cut_after_request(2000)
                await proxy.cut_done.wait()
            assert unknown > 0
            for pid, sequence in acked.items():
                stored = await journal.read_events(pid)
                assert [e.sequence for e in stored][:sequence] == list(range(1, sequence + 1))
            assert await journal.append("after/cut", 0, [ev(0)]) == 1
        nursery.cancel_scope.cancel()


async def _read_retrying(journal: object, pid: str) -> list[object]:
    from penpay.storage.journal import PgJournal

    assert isinstance(journal, PgJournal)
    while True:
        try:
            return list(await journal.read_events(pid))
        except JournalUnavailable:
            await trio.sleep(POLL_S)


class migrated_database_via:
    """``migrated`` pool on an explicit URL (here: through the proxy)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._db: Database | None = None

    async def __aenter__(self) -> Database:
        from penpay.storage.migrations import migrate
        from penpay.storage.pg import open_database

        self._db = await open_database(self.url)
        await migrate(self._db)
        return self._db

    async def __aexit__(self, *exc: object) -> None:
        assert self._db is not None
        await self._db.aclose()


async def test_database_down_at_start_up_is_retried_until_it_is_up(
    pg_admin_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = PgProxy(pg_admin_url)
    readiness = Readiness()
    failures = trio.Event()

    def on_retry(attempt: int, error: DatabaseError) -> None:
        if attempt >= 2:
            failures.set()

    caplog.set_level(logging.WARNING, "penpay.storage.connect")
    async with trio.open_nursery() as nursery:
        result: list[Database] = []
        connected = trio.Event()

        async def start() -> None:
            result.append(
                await connect_with_retry(
                    proxy.url("postgres"),
                    readiness=readiness,
                    backoff_min_s=0.01,
                    backoff_max_s=0.05,
                    on_retry=on_retry,
                )
            )
            connected.set()

        nursery.start_soon(start)
        await failures.wait()
        assert not readiness() and "unreachable" in readiness.reason
        assert any("unreachable" in r.getMessage() and "retrying" in r.getMessage()
                   for r in caplog.records)
        await nursery.start(proxy.serve)
        await connected.wait()
        assert readiness()
        assert await result[0].fetchval("SELECT 41 + 1") == 42
        await result[0].aclose()
        nursery.cancel_scope.cancel()


async def test_connect_with_retry_gives_up_after_attempts_max() -> None:
    proxy = PgProxy("postgresql://127.0.0.1/x")  # never served: always refused
    with pytest.raises(DatabaseError):
        await connect_with_retry(proxy.url("x"), attempts_max=2, backoff_min_s=0.01)


async def test_two_activations_racing_exactly_one_append_wins(db: Database) -> None:
    async with open_pg_journal(db) as journal, open_actor_system(
        journal=journal
    ) as first, open_actor_system(journal=journal) as second:
        a, b = first.ref(Tally, "t"), second.ref(Tally, "t")
        assert await a.ask(Total()) == 0 and await b.ask(Total()) == 0  # both at sequence 0
        results: dict[str, object] = {}

        async def deposit(name: str, ref: object, amount: int) -> None:
            from penpay.engine import ActorRef

            assert isinstance(ref, ActorRef)
            try:
                results[name] = await ref.ask(Deposit(amount))
            except ActorStopped as exc:
                results[name] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(deposit, "a", a, 5)
            nursery.start_soon(deposit, "b", b, 7)
        stopped = [n for n, r in results.items() if isinstance(r, ActorStopped)]
        won = [n for n, r in results.items() if isinstance(r, int)]
        assert len(stopped) == 1 and len(won) == 1
        events = await journal.read_events("tally/t")
        assert len(events) == 1
        winner_total = results[won[0]]
        # The loser's next activation recovers the winner's event.
        loser = a if stopped[0] == "a" else b
        assert await loser.ask(Total()) == winner_total


async def test_corrupt_event_parks_that_actor_and_siblings_keep_working(db: Database) -> None:
    async with open_pg_journal(db) as journal:
        async with open_actor_system(journal=journal) as system:
            await system.ref(Tally, "bad").ask(Deposit(1))
            await system.ref(Tally, "junk").ask(Deposit(1))
            await system.ref(Tally, "good").ask(Deposit(2))
        await db.execute("DELETE FROM snapshots")  # force replay from the journal
        corrupt = "UPDATE journal SET {} WHERE persistence_id = $1"
        await db.execute(corrupt.format("type = 'tally.vanished'"), "tally/bad")
        await db.execute(corrupt.format("payload = '\\xc1'"), "tally/junk")
        async with open_actor_system(journal=journal) as system:
            with pytest.raises(ActorParked, match="unknown event type"):
                await system.ref(Tally, "bad").ask(Total())
            with pytest.raises(ActorParked, match="cannot decode"):
                await system.ref(Tally, "junk").ask(Total())
            failed = {i.key for i in system.actors(status=ActorStatus.FAILED)}
            assert failed == {"bad", "junk"}
            assert await system.ref(Tally, "good").ask(Deposit(3)) == 5


async def test_writer_reconnects_after_server_side_termination(db: Database) -> None:
    async with open_pg_journal(db, reconnect_backoff_min_s=0.01) as journal:
        assert await journal.append("r/1", 0, [ev(1)]) == 1
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            WRITER_APPLICATION_NAME,
        )
        # The next append may meet the dead connection (unknown outcome) or a new one.
        try:
            sequence = await journal.append("r/1", 1, [ev(2)])
        except JournalUnavailable:
            sequence = len(await journal.read_events("r/1"))
        assert await journal.append("r/1", sequence, [ev(3)]) == sequence + 1


def test_a_connection_in_a_broken_protocol_state_counts_as_lost() -> None:
    """asyncpg says "another operation is in progress" on a connection the server
    ended mid-operation (seen in CI): the journal writer must reconnect, not stop."""
    broken = asyncpg.InternalClientError("cannot switch to state 12; another operation (2)")
    assert isinstance(pg._translate(broken), ConnectionLost)
    assert isinstance(pg._translate(asyncpg.InterfaceError("closed")), ConnectionLost)
    refused = pg._translate(asyncpg.UniqueViolationError("duplicate key"))
    assert isinstance(refused, pg.QueryFailed)


def test_with_database_rewrites_only_the_name() -> None:
    assert (
        with_database("postgresql://u@/postgres?host=/tmp/x", "t1")
        == "postgresql://u@/t1?host=/tmp/x"
    )


@pytest.mark.parametrize(
    "url",
    [
        "mysql://penpay@127.0.0.1/penpay",
        "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=bogus",
    ],
)
async def test_a_malformed_database_url_is_a_configuration_error_not_an_outage(
    url: str,
) -> None:
    """Retried as if the server were down, it kept start-up waiting for ever."""
    with trio.fail_after(10), pytest.raises(ConfigurationError, match="database"):
        await connect_with_retry(url, attempts_max=None)


def test_a_password_given_as_an_option_is_redacted_too() -> None:
    url = "postgresql://penpay:secret1@db:5432/penpay?sslmode=require&password=secret2"
    shown = redact(url)
    assert "secret" not in shown and "sslmode=require" in shown
