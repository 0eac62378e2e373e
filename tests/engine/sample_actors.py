"""Small actors used by the engine tests."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import trio

from penpay.engine import Actor, EventCodec, EventSourcedActor, Rejection


class Append(msgspec.Struct, frozen=True):
    item: str


class GetItems(msgspec.Struct, frozen=True):
    pass


class Crash(msgspec.Struct, frozen=True):
    reason: str = "boom"


class Block(msgspec.Struct, frozen=True):
    """Holds the actor until ``release`` is set."""

    release: trio.Event


class Recorder(Actor):
    """Keeps, in memory only, the messages it saw."""

    kind = "recorder"

    def __init__(self) -> None:
        self.items: list[str] = []
        self.starts = 0

    async def on_start(self) -> None:
        self.starts += 1

    async def receive(self, message: Any) -> Any:
        match message:
            case Append(item):
                self.items.append(item)
                return len(self.items)
            case GetItems():
                return list(self.items)
            case Crash(reason):
                raise RuntimeError(reason)
            case Block(release):
                await release.wait()
                return "released"
        raise TypeError(f"unexpected {message!r}")


# --- an event-sourced counter ------------------------------------------------


class Added(msgspec.Struct, frozen=True, tag="counter.added"):
    amount: int


class Reset(msgspec.Struct, frozen=True, tag="counter.reset"):
    pass


class CounterState(msgspec.Struct, frozen=True):
    total: int = 0
    history: tuple[int, ...] = ()


class Add(msgspec.Struct, frozen=True):
    amount: int


class GetTotal(msgspec.Struct, frozen=True):
    pass


class Overdraw(Rejection):
    pass


class Counter(EventSourcedActor[CounterState]):
    kind = "counter"
    codec: ClassVar[EventCodec] = EventCodec(Added, Reset)
    state_type = CounterState
    recoveries: ClassVar[int] = 0

    def initial_state(self) -> CounterState:
        return CounterState()

    def apply(self, state: CounterState, event: Any) -> CounterState:
        match event:
            case Added(amount):
                return CounterState(state.total + amount, (*state.history, amount))
            case Reset():
                return CounterState()
        raise TypeError(event)

    async def on_recovered(self) -> None:
        type(self).recoveries += 1

    async def receive(self, message: Any) -> Any:
        match message:
            case Add(amount):
                if self.state.total + amount < 0:
                    raise Overdraw(f"total {self.state.total} cannot take {amount}")
                await self.persist(Added(amount))
                return self.state.total
            case GetTotal():
                return self.state.total
            case Crash(reason):
                raise RuntimeError(reason)
        raise TypeError(f"unexpected {message!r}")


# --- a deadline that must survive restarts -----------------------------------


class Armed(msgspec.Struct, frozen=True, tag="alarm.armed"):
    deadline_ms: int


class Rang(msgspec.Struct, frozen=True, tag="alarm.rang"):
    at_ms: int


class AlarmState(msgspec.Struct, frozen=True):
    deadline_ms: int | None = None
    rang_at_ms: int | None = None


class Arm(msgspec.Struct, frozen=True):
    after_s: float


class Ring(msgspec.Struct, frozen=True):
    pass


class Alarm(EventSourcedActor[AlarmState]):
    """Persists a deadline and re-arms its timer from it after any restart."""

    kind = "alarm"
    codec: ClassVar[EventCodec] = EventCodec(Armed, Rang)
    state_type = AlarmState

    def initial_state(self) -> AlarmState:
        return AlarmState()

    def apply(self, state: AlarmState, event: Any) -> AlarmState:
        match event:
            case Armed(deadline_ms):
                return AlarmState(deadline_ms=deadline_ms)
            case Rang(at_ms):
                return msgspec.structs.replace(state, rang_at_ms=at_ms)
        raise TypeError(event)

    async def on_recovered(self) -> None:
        state = self.state
        if state.deadline_ms is not None and state.rang_at_ms is None:
            remaining_ms = max(state.deadline_ms - self.clock.now_ms(), 0)
            self.schedule(remaining_ms / 1000, Ring())

    async def receive(self, message: Any) -> Any:
        match message:
            case Arm(after_s):
                deadline = self.clock.now_ms() + int(after_s * 1000)
                await self.persist(Armed(deadline))
                self.schedule(after_s, Ring())
                return deadline
            case Ring():
                if self.state.rang_at_ms is None:  # a stale timer is harmless
                    await self.persist(Rang(self.clock.now_ms()))
                return None
            case Crash(reason):
                raise RuntimeError(reason)
        raise TypeError(f"unexpected {message!r}")
