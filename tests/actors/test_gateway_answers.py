"""A gateway's answer that cannot be delivered harms no other call in flight."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import trio

from penpay.actors.gateway import GatewayActor, GatewayRequest
from penpay.actors.saga import Command, CreditDeriv, DerivCredited, Input
from penpay.engine import Actor, ActorParked
from penpay.engine.testing import open_test_system, settle


class SlowDeriv(GatewayActor):
    """Answers each credit after the delay its reference names."""

    kind = "slow-deriv"

    async def call(self, command: Command, user_id: str) -> Input | None:
        assert isinstance(command, CreditDeriv)
        await trio.sleep(float(command.reference.split()[-1]))
        return DerivCredited(command.reference, 42)

    def unknown(self, command: Command, reason: str) -> Input | None:
        raise AssertionError(f"no call fails here: {reason}")


class Inbox(Actor):
    kind = "inbox"
    received: ClassVar[list[Any]] = []

    async def receive(self, message: Any) -> Any:
        type(self).received.append(message)


class Unbuildable(Actor):
    """Parked on its first message: its factory cannot build it."""

    kind = "unbuildable"

    def __init__(self, missing: object) -> None:
        self.missing = missing

    async def receive(self, message: Any) -> Any:
        return None


def _credit(reply_kind: str, delay_s: int) -> GatewayRequest:
    return GatewayRequest(CreditDeriv("CR1", 1000, f"credit after {delay_s}"), reply_kind, "k")


async def test_an_answer_for_a_parked_transaction_does_not_cancel_the_other_calls(
    autojump_clock: trio.abc.Clock,
) -> None:
    Inbox.received = []
    async with open_test_system() as system:
        system.register(Inbox)
        system.register(Unbuildable)
        with pytest.raises(ActorParked):
            await system.ref(Unbuildable, "k").ask("wake")
        gateway = system.ref(SlowDeriv, "agent")
        await gateway.tell(_credit("unbuildable", 1))  # its answer cannot be delivered
        await gateway.tell(_credit("inbox", 30))
        await trio.sleep(60)
        await settle(system)
        assert Inbox.received == [DerivCredited("credit after 30", 42)]
        info = system.info(SlowDeriv, "agent")
        assert info is not None and info.restarts == 0
