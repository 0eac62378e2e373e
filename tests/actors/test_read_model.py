"""The read model ends where the transaction ends, whatever order reports land in.

A Start's answer is written to the index by the request that sent it; the
actor reports its later status changes itself. When M-Pesa refuses a push at
once, the actor's FAILED can be written before the request writes the
PENDING its Start returned; that late PENDING must not win.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import trio
import trio.testing

from penpay.actors.callbacks import CallbackTokens
from penpay.actors.fx import FxPolicy
from penpay.actors.gateway import GatewayRequest
from penpay.actors.payments import Payments
from penpay.actors.policy import Limits
from penpay.actors.saga import StartStkPush, StkPushRejected
from penpay.actors.transaction import DepositActor, SagaDeps
from penpay.engine import Actor, ActorRef
from penpay.engine.testing import open_test_system, settle
from penpay.money import Currency
from penpay.storage.transactions import MemoryTransactionIndex

DEPOSITS = 20
ROUND_TRIP_S = 0.005


class IndexBehindADatabase(MemoryTransactionIndex):
    """The twin, with a round trip before each write lands."""

    async def update(
        self, transaction_id: uuid.UUID, status: str, view: dict[str, Any], at: datetime
    ) -> None:
        await trio.sleep(ROUND_TRIP_S)
        await super().update(transaction_id, status, view, at)


class RefusingMpesa(Actor):
    """Daraja refuses every push at once (400.002.02: the number is not valid)."""

    kind = "mpesa-gateway"

    async def receive(self, message: Any) -> Any:
        assert isinstance(message, GatewayRequest)
        assert isinstance(message.command, StartStkPush)
        sender = self.system.ref(self.system.kinds[message.reply_kind], message.reply_key)
        await sender.tell(StkPushRejected("400.002.02", "Invalid PhoneNumber"))


class NoLedger:
    async def post(self, transaction_id: str, posting: Any) -> None:
        return None


@dataclass(frozen=True)
class Customer:
    id: uuid.UUID
    status: str = "active"
    deriv_login_id: str | None = "CR1234567"


class Directory:
    def phone_of(self, user: Any) -> str:
        return "254712345678"

    def deriv_token_of(self, user: Any) -> str:
        return "a-deriv-token"

    async def link_deriv(self, user_id: uuid.UUID, **details: str) -> None:
        raise NotImplementedError


async def _final_pairs() -> list[tuple[str, str]]:
    async with open_test_system(seed=3) as system:
        index = IndexBehindADatabase()
        payments = Payments(
            system=system, index=index, auth=Directory(), deriv=None,
            tokens=CallbackTokens(b"k" * 32), fx=FxPolicy(), limits=Limits(),
        )
        system.register(RefusingMpesa, RefusingMpesa)
        mpesa = system.ref(RefusingMpesa, "daraja")

        def gateway_for(command: Any) -> ActorRef:
            return mpesa

        deps = SagaDeps(ledger=NoLedger(), gateway_for=gateway_for, observe=payments.observe)
        system.register(DepositActor, lambda: DepositActor(deps))
        started = [
            await payments.start_deposit(
                Customer(uuid.UUID(int=n + 1)), f"key-{n:04d}", 1_000, Currency.USD, None
            )
            for n in range(DEPOSITS)
        ]
        await trio.sleep(1)
        await settle(system)
        pairs = []
        for view in started:
            state = await payments.state_of(view["transaction_id"])
            row = await index.get(uuid.UUID(view["transaction_id"]))
            assert row is not None
            pairs.append((state.status.value, row.status))
        return pairs


def test_a_late_start_answer_does_not_overwrite_a_later_status() -> None:
    pairs = trio.run(_final_pairs, clock=trio.testing.MockClock(autojump_threshold=0))
    assert pairs == [("FAILED", "FAILED")] * DEPOSITS
