"""Event-sourcing guarantees: fencing, loud recovery failures, upcasting."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import pytest
import trio

from penpay.engine import (
    ActorCrashed,
    ActorParked,
    ActorStatus,
    ActorStopped,
    ConcurrencyConflict,
    EventCodec,
    EventRecord,
    InMemoryJournal,
    JournalCorrupt,
    JournalUnavailable,
    StoredEvent,
)
from penpay.engine.testing import open_test_system, settle
from tests.engine.sample_actors import Add, Counter, GetTotal


async def test_a_second_activation_is_fenced_by_the_journal(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Two systems (think: two processes) activate one counter on one journal."""
    journal = InMemoryJournal()
    async with open_test_system(journal=journal) as first, open_test_system(
        journal=journal
    ) as second:
        a, b = first.ref(Counter, "c"), second.ref(Counter, "c")
        assert await a.ask(Add(1)) == 1  # first activation at sequence 1
        assert await b.ask(Add(10)) == 11  # second recovers 1, appends at 2
        with pytest.raises(ActorStopped, match="expected sequence 1, journal is at 2"):
            await a.ask(Add(100))  # stale: stops instead of diverging
        await settle(first)
        assert first.info(Counter, "c") is None  # stopped, not restarted in place
        assert await a.ask(GetTotal()) == 11  # a fresh activation reads the truth
    events = await journal.read_events("counter/c")
    assert [e.sequence for e in events] == [1, 2]


async def test_append_conflict_is_precise() -> None:
    journal = InMemoryJournal()
    record = EventRecord(type="t", version=1, payload=b"")
    assert await journal.append("x", 0, [record, record]) == 2
    with pytest.raises(ConcurrencyConflict) as info:
        await journal.append("x", 1, [record])
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert len(await journal.read_events("x")) == 2


async def test_unknown_event_type_parks_only_that_actor(autojump_clock: trio.abc.Clock) -> None:
    journal = InMemoryJournal()
    async with open_test_system(journal=journal) as system:
        await system.ref(Counter, "bad").ask(Add(1))
        await system.ref(Counter, "good").ask(Add(2))
    journal.corrupt("counter/bad", 1, type="counter.vanished", payload=b"\x80")
    del journal._snapshots["counter/bad"]  # shutdown snapshotted it; force a replay
    async with open_test_system(journal=journal) as system:
        with pytest.raises(ActorParked, match="unknown event type"):
            await system.ref(Counter, "bad").ask(GetTotal())
        await settle(system)
        info = system.info(Counter, "bad")
        assert info is not None and info.status is ActorStatus.FAILED
        assert info.failure is not None and "unknown event type 'counter.vanished'" in info.failure
        with pytest.raises(ActorParked):
            await system.ref(Counter, "bad").ask(GetTotal())
        assert await system.ref(Counter, "good").ask(GetTotal()) == 2


async def test_corrupt_payload_is_reported_with_its_position() -> None:
    codec = EventCodec(*Counter.codec._by_tag.values())
    stored = StoredEvent(
        persistence_id="counter/x", sequence=3, type="counter.added", version=1,
        payload=b"\xc1", position=9, recorded_at_ms=0,
    )
    with pytest.raises(JournalCorrupt, match=r"counter/x#3: cannot decode counter.added"):
        codec.decode(stored)


class PriceSetV2(msgspec.Struct, frozen=True, tag="price.set"):
    version: ClassVar[int] = 2
    amount_cents: int
    currency: str


def test_an_old_event_version_is_upcast_on_read() -> None:
    # Version 1 stored whole shillings and no currency.
    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {"type": data["type"], "amount_cents": data["shillings"] * 100, "currency": "KES"}

    codec = EventCodec(PriceSetV2, upcasters={("price.set", 1): v1_to_v2})
    old = StoredEvent(
        persistence_id="p/1", sequence=1, type="price.set", version=1,
        payload=msgspec.msgpack.encode({"type": "price.set", "shillings": 135}),
        position=1, recorded_at_ms=0,
    )
    assert codec.decode(old) == PriceSetV2(amount_cents=13500, currency="KES")
    new = codec.encode(PriceSetV2(amount_cents=1, currency="USD"))
    assert (new.type, new.version) == ("price.set", 2)
    missing = EventCodec(PriceSetV2)
    with pytest.raises(JournalCorrupt, match=r"no upcaster for price\.set v1"):
        missing.decode(old)


async def test_a_failed_append_leaves_state_at_what_was_committed(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = InMemoryJournal()
    async with open_test_system(journal=journal) as system:
        counter = system.ref(Counter, "c")
        await counter.ask(Add(5))
        journal.fail_appends = lambda pid: True
        with pytest.raises(ActorCrashed) as info:
            await counter.ask(Add(7))
        assert isinstance(info.value.__cause__, JournalUnavailable)
        journal.fail_appends = None
        assert await counter.ask(GetTotal()) == 5
        assert await counter.ask(Add(1)) == 6


class CounterV2(Counter):
    """The same actor after a change of its state's shape."""

    kind = "counter"
    state_version = 2


async def test_a_snapshot_of_an_older_state_version_is_replaced(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Ignored on recovery, it must not stop the next snapshot being taken: every
    activation would replay the whole stream until enough new events came."""
    journal = InMemoryJournal()
    async with open_test_system(journal=journal) as system:
        system.register(Counter, Counter, passivate_after_s=1.0)
        for _ in range(5):
            await system.ref(Counter, "c").ask(Add(1))
        await trio.sleep(5)  # passivated: a version-1 snapshot at sequence 5
        await settle(system)
    async with open_test_system(journal=journal) as system:
        system.register(Counter, CounterV2, passivate_after_s=1.0)
        assert await system.ref(Counter, "c").ask(GetTotal()) == 5  # replayed from events
        await trio.sleep(5)  # passivated again
        await settle(system)
    snapshot = await journal.load_snapshot("counter/c")
    assert snapshot is not None and (snapshot.sequence, snapshot.version) == (5, 2)
