"""Actors that take queued messages as one batch (``batch_messages_max``)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import trio
import trio.testing

from penpay.engine import ActorCrashed, EventCodec, EventSourcedActor, InMemoryJournal, Rejection
from penpay.engine.testing import open_test_system
from tests.engine.sample_actors import Add, Added, Block, CounterState, Crash


class TooBig(Rejection):
    pass


class BatchingCounter(EventSourcedActor[CounterState]):
    kind = "batching-counter"
    batch_messages_max: ClassVar[int] = 8
    codec: ClassVar[EventCodec] = EventCodec(Added)
    state_type = CounterState
    batches: ClassVar[list[int]] = []

    def initial_state(self) -> CounterState:
        return CounterState()

    def apply(self, state: CounterState, event: Any) -> CounterState:
        assert isinstance(event, Added)
        return CounterState(state.total + event.amount, (*state.history, event.amount))

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        type(self).batches.append(len(messages))
        replies: list[Any] = []
        events: list[Added] = []
        for message in messages:
            match message:
                case Block(release):
                    await release.wait()
                    replies.append("released")
                case Add(amount) if amount > 100:
                    replies.append(TooBig(f"{amount} is too big"))
                case Add(amount):
                    events.append(Added(amount))
                    replies.append(amount)
                case Crash():
                    raise RuntimeError("batch crash")
        await self.persist(*events)  # one append for the whole batch
        return replies


async def test_queued_messages_are_handled_as_one_batch_with_one_append(
    autojump_clock: trio.abc.Clock,
) -> None:
    BatchingCounter.batches.clear()
    journal = InMemoryJournal()
    async with open_test_system(journal=journal) as system:
        ref = system.ref(BatchingCounter, "b")
        release = trio.Event()
        results: dict[int, Any] = {}

        async def add(amount: int) -> None:
            try:
                results[amount] = await ref.ask(Add(amount))
            except TooBig as exc:
                results[amount] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.ask, Block(release))
            await trio.testing.wait_all_tasks_blocked()
            for amount in (1, 2, 300, 4):
                nursery.start_soon(add, amount)
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        assert BatchingCounter.batches == [1, 4]
        assert results[1] == 1 and results[2] == 2 and results[4] == 4
        assert isinstance(results[300], TooBig)  # only its own asker is refused
        events = await journal.read_events("batching-counter/b")
        assert [e.sequence for e in events] == [1, 2, 3]
        assert (await system.inspect(BatchingCounter, "b"))["state"]["total"] == 7


async def test_a_crash_in_a_batch_fails_every_message_of_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_test_system() as system:
        ref = system.ref(BatchingCounter, "b")
        release = trio.Event()
        outcomes: list[type[BaseException] | str] = []

        async def ask(message: Any) -> None:
            try:
                await ref.ask(message)
                outcomes.append("ok")
            except ActorCrashed:
                outcomes.append(ActorCrashed)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.ask, Block(release))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, Add(1))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, Crash())
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        assert outcomes == [ActorCrashed, ActorCrashed]
        # Nothing of the crashed batch was persisted.
        assert (await system.inspect(BatchingCounter, "b"))["state"]["total"] == 0
        with pytest.raises(TooBig):
            await ref.ask(Add(101))
