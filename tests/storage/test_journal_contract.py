"""One contract for every Journal: the in-memory twin and PostgreSQL.

Whatever the engine relies on is stated here once and checked against both
implementations, so simulation tests on the twin mean something for
production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from penpay.engine import (
    ConcurrencyConflict,
    EventRecord,
    InMemoryJournal,
    Snapshot,
)
from penpay.storage.journal import PgJournal, open_pg_journal
from penpay.storage.testing import migrated_database
from tests.storage.backends import EACH_BACKEND

AnyJournal = InMemoryJournal | PgJournal


def ev(n: int, type: str = "thing.happened", version: int = 1) -> EventRecord:
    return EventRecord(type=type, version=version, payload=f"payload-{n}".encode())


@pytest.fixture(params=EACH_BACKEND)
async def journal(request: pytest.FixtureRequest, pg_admin_url: str) -> AsyncIterator[AnyJournal]:
    if request.param == "memory":
        yield InMemoryJournal()
        return
    async with migrated_database(pg_admin_url) as db, open_pg_journal(
        db, batch_events_max=100, batch_window_ms=1.0
    ) as pg:
        yield pg


async def test_append_then_read_returns_the_events_in_order(journal: AnyJournal) -> None:
    assert await journal.append("a/1", 0, [ev(1), ev(2, "other", 3)]) == 2
    stored = await journal.read_events("a/1")
    assert [(e.sequence, e.type, e.version, e.payload) for e in stored] == [
        (1, "thing.happened", 1, b"payload-1"),
        (2, "other", 3, b"payload-2"),
    ]
    assert all(e.persistence_id == "a/1" for e in stored)


async def test_sequences_are_gap_free_across_appends(journal: AnyJournal) -> None:
    assert await journal.append("a/1", 0, [ev(1)]) == 1
    assert await journal.append("a/1", 1, [ev(2), ev(3)]) == 3
    assert await journal.append("a/1", 3, [ev(4)]) == 4
    assert [e.sequence for e in await journal.read_events("a/1")] == [1, 2, 3, 4]


async def test_streams_are_independent(journal: AnyJournal) -> None:
    await journal.append("a/1", 0, [ev(1)])
    assert await journal.append("a/2", 0, [ev(2)]) == 1
    assert [e.payload for e in await journal.read_events("a/2")] == [b"payload-2"]


async def test_reading_an_unknown_stream_is_empty(journal: AnyJournal) -> None:
    assert list(await journal.read_events("nobody/0")) == []


async def test_read_after_sequence(journal: AnyJournal) -> None:
    await journal.append("a/1", 0, [ev(i) for i in range(1, 6)])
    assert [e.sequence for e in await journal.read_events("a/1", 3)] == [4, 5]
    assert list(await journal.read_events("a/1", 5)) == []


@pytest.mark.parametrize("stale", [0, 1, 3])
async def test_a_wrong_expected_sequence_conflicts_and_writes_nothing(
    journal: AnyJournal, stale: int
) -> None:
    await journal.append("a/1", 0, [ev(1), ev(2)])
    with pytest.raises(ConcurrencyConflict) as info:
        await journal.append("a/1", stale, [ev(10), ev(11), ev(12)])
    assert (info.value.persistence_id, info.value.expected, info.value.actual) == ("a/1", stale, 2)
    assert [e.payload for e in await journal.read_events("a/1")] == [b"payload-1", b"payload-2"]


async def test_an_empty_append_still_checks_the_expected_sequence(journal: AnyJournal) -> None:
    await journal.append("a/1", 0, [ev(1)])
    assert await journal.append("a/1", 1, []) == 1
    with pytest.raises(ConcurrencyConflict):
        await journal.append("a/1", 0, [])


async def test_concurrent_appends_to_one_stream_exactly_one_wins(journal: AnyJournal) -> None:
    outcomes: list[str] = []

    async def writer(i: int) -> None:
        try:
            await journal.append("race/1", 0, [ev(i), ev(i + 100)])
            outcomes.append(f"won:{i}")
        except ConcurrencyConflict:
            outcomes.append("lost")

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(writer, i)
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("lost") == 9
    i = int(winners[0].split(":")[1])
    stored = await journal.read_events("race/1")
    assert [e.payload for e in stored] == [ev(i).payload, ev(i + 100).payload]


async def test_a_conflict_fails_only_its_own_caller(journal: AnyJournal) -> None:
    for n in range(20):
        await journal.append(f"s/{n}", 0, [ev(n)])
    results: dict[str, object] = {}

    async def writer(pid: str, expected: int) -> None:
        try:
            results[pid] = await journal.append(pid, expected, [ev(99)])
        except ConcurrencyConflict as exc:
            results[pid] = exc

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(writer, f"s/{n}", 0 if n == 7 else 1)
    assert isinstance(results.pop("s/7"), ConcurrencyConflict)
    assert set(results.values()) == {2}
    assert len(await journal.read_events("s/7")) == 1


async def test_many_concurrent_writers_all_commit(journal: AnyJournal) -> None:
    async def actor(n: int) -> None:
        sequence = 0
        for i in range(5):
            sequence = await journal.append(f"m/{n}", sequence, [ev(i)])

    async with trio.open_nursery() as nursery:
        for n in range(200):
            nursery.start_soon(actor, n)
    for n in (0, 99, 199):
        assert [e.sequence for e in await journal.read_events(f"m/{n}")] == [1, 2, 3, 4, 5]


async def test_read_all_is_complete_and_strictly_increasing(journal: AnyJournal) -> None:
    async def actor(n: int) -> None:
        sequence = 0
        for i in range(3):
            sequence = await journal.append(f"f/{n}", sequence, [ev(i), ev(i + 10)])

    async with trio.open_nursery() as nursery:
        for n in range(30):
            nursery.start_soon(actor, n)
    everything = list(await journal.read_all(0, 10_000))
    assert len(everything) == 30 * 3 * 2
    positions = [e.position for e in everything]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    # Within a stream, global order agrees with sequence order.
    for n in range(30):
        seqs = [e.sequence for e in everything if e.persistence_id == f"f/{n}"]
        assert seqs == [1, 2, 3, 4, 5, 6]


async def test_read_all_pages_by_position(journal: AnyJournal) -> None:
    await journal.append("p/1", 0, [ev(i) for i in range(7)])
    first = list(await journal.read_all(0, 3))
    rest = list(await journal.read_all(first[-1].position, 100))
    assert len(first) == 3 and len(rest) == 4
    assert [e.sequence for e in first + rest] == list(range(1, 8))
    assert list(await journal.read_all(rest[-1].position, 100)) == []


async def test_snapshots_newer_wins(journal: AnyJournal) -> None:
    assert await journal.load_snapshot("a/1") is None
    await journal.save_snapshot(Snapshot(persistence_id="a/1", sequence=5, version=1, payload=b"5"))
    await journal.save_snapshot(Snapshot(persistence_id="a/1", sequence=3, version=1, payload=b"3"))
    snap = await journal.load_snapshot("a/1")
    assert snap == Snapshot(persistence_id="a/1", sequence=5, version=1, payload=b"5")
    await journal.save_snapshot(Snapshot(persistence_id="a/1", sequence=9, version=2, payload=b"9"))
    assert await journal.load_snapshot("a/1") == Snapshot(
        persistence_id="a/1", sequence=9, version=2, payload=b"9"
    )
    assert await journal.load_snapshot("a/2") is None
