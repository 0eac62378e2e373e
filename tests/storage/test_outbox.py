"""The outbox relay publishes committed events to Redis, in order, at least once."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import coredis
import pytest
import trio

from penpay.engine import EventRecord
from penpay.storage.journal import open_pg_journal
from penpay.storage.outbox import OutboxRelay, redis_from_url
from penpay.storage.pg import Database
from tests.storage.waiting import wait_until_writer_blocked

pytestmark = pytest.mark.storage


def ev(n: int) -> EventRecord:
    return EventRecord(type="thing.happened", version=2, payload=b"p%d" % n)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    client = redis_from_url(redis_url)
    async with client:
        yield client


@pytest.fixture
def stream_key() -> str:
    return "test:events:" + secrets.token_hex(4)


async def _entries(redis: coredis.Redis[bytes], key: str) -> list[dict[bytes, bytes]]:
    return [dict(e.field_values) for e in await redis.xrange(key)]


async def test_relay_publishes_committed_events_in_position_order_and_resumes(
    db: Database, redis: coredis.Redis[bytes], stream_key: str
) -> None:
    async with open_pg_journal(db) as journal:
        await journal.append("a/1", 0, [ev(1), ev(2)])
        await journal.append("b/1", 0, [ev(3)])
        relay = OutboxRelay(db, journal, redis, stream_key=stream_key, page_events_max=2)
        await relay.load_cursor()
        assert await relay.relay_once() == 2
        assert await relay.relay_once() == 1
        assert await relay.relay_once() == 0
        entries = await _entries(redis, stream_key)
        assert [e[b"position"] for e in entries] == [b"1", b"2", b"3"]
        assert entries[0] == {
            b"persistence_id": b"a/1", b"sequence": b"1", b"type": b"thing.happened",
            b"version": b"2", b"position": b"1", b"payload": b"p1",
        }
        # A new relay (think: after a restart) resumes after the stored cursor.
        await journal.append("a/1", 2, [ev(4)])
        restarted = OutboxRelay(db, journal, redis, stream_key=stream_key)
        assert await restarted.load_cursor() == 3
        assert await restarted.relay_once() == 1
        assert [e[b"payload"] for e in await _entries(redis, stream_key)] == [
            b"p1", b"p2", b"p3", b"p4"
        ]


async def test_running_relay_follows_new_commits(
    db: Database, redis: coredis.Redis[bytes], stream_key: str
) -> None:
    async with open_pg_journal(db) as journal, trio.open_nursery() as nursery:
        relay = OutboxRelay(db, journal, redis, stream_key=stream_key, poll_interval_ms=50)
        await nursery.start(relay.run)

        async def actor(n: int) -> None:
            sequence = 0
            for i in range(10):
                sequence = await journal.append(f"r/{n}", sequence, [ev(i)])

        async with trio.open_nursery() as load:
            for n in range(20):
                load.start_soon(actor, n)
        with trio.fail_after(10):
            await relay.wait_published(200)
        entries = await _entries(redis, stream_key)
        assert [int(e[b"position"]) for e in entries] == list(range(1, 201))
        nursery.cancel_scope.cancel()


async def test_relay_never_publishes_an_uncommitted_batch(
    db: Database, redis: coredis.Redis[bytes], stream_key: str
) -> None:
    async with open_pg_journal(db) as journal:
        await journal.append("a/1", 0, [ev(1)])
        relay = OutboxRelay(db, journal, redis, stream_key=stream_key)
        await relay.load_cursor()
        async with trio.open_nursery() as nursery, db.transaction() as blocker:
            # Park the next batch inside the server, before its commit.
            await blocker.execute("SELECT 1 FROM journal_head WHERE id = 1 FOR UPDATE")
            nursery.start_soon(journal.append, "a/1", 1, [ev(2)])
            await wait_until_writer_blocked(db)
            assert await relay.relay_once() == 1  # only the committed event
        assert await relay.relay_once() == 1  # the batch committed once unblocked
        assert [e[b"sequence"] for e in await _entries(redis, stream_key)] == [b"1", b"2"]
