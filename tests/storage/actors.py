"""An event-sourced actor for storage tests (kept here, not shared with engine tests)."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from penpay.engine import EventCodec, EventSourcedActor


class Deposited(msgspec.Struct, frozen=True, tag="tally.deposited"):
    amount_cents: int


class TallyState(msgspec.Struct, frozen=True):
    total_cents: int = 0


class Deposit(msgspec.Struct, frozen=True):
    amount_cents: int


class Total(msgspec.Struct, frozen=True):
    pass


class Tally(EventSourcedActor[TallyState]):
    kind = "tally"
    codec: ClassVar[EventCodec] = EventCodec(Deposited)
    state_type = TallyState

    def initial_state(self) -> TallyState:
        return TallyState()

    def apply(self, state: TallyState, event: Any) -> TallyState:
        assert isinstance(event, Deposited)
        return TallyState(state.total_cents + event.amount_cents)

    async def receive(self, message: Any) -> Any:
        match message:
            case Deposit(amount_cents):
                await self.persist(Deposited(amount_cents))
                return self.state.total_cents
            case Total():
                return self.state.total_cents
        raise TypeError(f"unexpected {message!r}")
