"""A deposit driven through its actor, the M-Pesa gateway actor, the real Daraja
client and the in-process Daraja sandbox, with callbacks through the real
callback route; Deriv is a scripted stand-in. Everything under a mock clock."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
from starlette.applications import Starlette

from penpay.actors.callbacks import CallbackTokens
from penpay.actors.daraja import DarajaClient, DarajaClientConfig
from penpay.actors.deposit import Start
from penpay.actors.fx import FxPolicy, TransactionType
from penpay.actors.gateway import GatewayRequest
from penpay.actors.mpesa import CallbackUrls, MpesaGateway
from penpay.actors.saga import (
    Command,
    CreditDeriv,
    DerivCredited,
    DerivLookup,
    DerivRejected,
    FindDerivTransfer,
    Posting,
    PostingKind,
    Status,
)
from penpay.actors.transaction import (
    AbandonIfNotStarted,
    DepositActor,
    FloatUnavailable,
    GetState,
    LedgerRefused,
    SagaDeps,
)
from penpay.engine import Actor, ActorCrashed, ActorSystem, InMemoryJournal
from penpay.engine.testing import open_test_system, settle
from penpay.http import callbacks
from penpay.http.problems import Problem, problem_handler
from penpay.money import Currency
from penpay.sandbox.daraja import Credentials, DarajaSandbox, DarajaSandboxConfig
from penpay.storage.raw_callbacks import InMemoryRawCallbacks

PHONE = "254712345678"
KEY, SECRET = "k", "s"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
TX = "0193a000-0000-7000-8000-00000000000{}"


@dataclass
class RecordingLedger:
    """Records postings; refuses holds when told to (an empty float)."""

    refuse_holds: bool = False
    refuse_once: str | None = None  # a posting name refused the first time it comes
    postings: list[tuple[str, Posting]] = field(default_factory=list)

    async def post(self, transaction_id: str, posting: Posting) -> None:
        if posting.kind is PostingKind.HOLD and self.refuse_holds:
            raise LedgerRefused("deriv_float: exceeds_debits")
        if posting.name == self.refuse_once:
            self.refuse_once = None
            raise LedgerRefused(f"{posting.name}: exceeds_credits")
        if (transaction_id, posting) not in self.postings:
            self.postings.append((transaction_id, posting))

    def names(self, transaction_id: str) -> list[str]:
        return [p.name for t, p in self.postings if t == transaction_id]


class ScriptedDeriv(Actor):
    """Answers Deriv commands the way a test says."""

    kind = "deriv-gateway"
    refuse: bool = False
    seen: list[Command] = []

    async def receive(self, message: Any) -> Any:
        assert isinstance(message, GatewayRequest)
        type(self).seen.append(message.command)
        reply = self.system.ref(self.system.kinds[message.reply_kind], message.reply_key)
        match message.command:
            case CreditDeriv(reference=reference) if self.refuse:
                await reply.tell(DerivRejected(reference, "PaymentAgentTransferError", "no"))
            case CreditDeriv(reference=reference):
                await reply.tell(DerivCredited(reference, 31337))
            case FindDerivTransfer(reference=reference):
                await reply.tell(DerivLookup(reference, None))  # never credited
        return None


@dataclass
class World:
    system: ActorSystem
    sandbox: DarajaSandbox
    ledger: RecordingLedger
    tokens: CallbackTokens
    raw: InMemoryRawCallbacks

    async def start(self, n: int, usd_cents: int = 1000) -> str:
        transaction_id = TX.format(n)
        quote = FxPolicy().quote(
            TransactionType.DEPOSIT, usd_cents, Currency.USD, self.system.clock.now_ms()
        )
        start = Start(
            transaction_id=transaction_id, user_id="u", phone=PHONE, deriv_login_id="CR1",
            quote=quote, callback_token=self.tokens.issue("deposit", transaction_id),
        )
        await self.system.ref(DepositActor, transaction_id).ask(start)
        return transaction_id

    async def state(self, transaction_id: str) -> Any:
        return await self.system.ref(DepositActor, transaction_id).ask(GetState())


@asynccontextmanager
async def world() -> AsyncIterator[World]:
    ScriptedDeriv.refuse = False
    ScriptedDeriv.seen = []
    async with open_test_system(seed=7) as system:
        tokens = CallbackTokens(b"c" * 32)
        raw = InMemoryRawCallbacks()
        callback_app = Starlette(
            routes=callbacks.routes(), exception_handlers={Problem: problem_handler}
        )
        deps = callbacks.CallbackDeps(system=system, tokens=tokens, store=raw)
        callback_app.state.callbacks = deps
        safaricom = ("196.201.212.69", 443)
        to_penpay = httpx.AsyncClient(transport=httpx.ASGITransport(callback_app, client=safaricom))
        sandbox = DarajaSandbox(
            DarajaSandboxConfig(credentials=(Credentials(KEY, SECRET),), result_delay_s=3.0),
            callback_http=to_penpay, wall_clock=system.clock.now, rng=random.Random(1),
        )
        async with sandbox:
            to_daraja = httpx.AsyncClient(
                transport=httpx.ASGITransport(sandbox.app), base_url="http://daraja"
            )
            client = DarajaClient(
                to_daraja,
                DarajaClientConfig(
                    base_url="http://daraja", consumer_key=KEY, consumer_secret=SECRET,
                    stk_shortcode="174379", stk_passkey=PASSKEY, b2c_shortcode="600992",
                    initiator_name="testapi", security_credential="cred",
                ),
                wall_clock=system.clock.now,
            )
            system.register(MpesaGateway, lambda: MpesaGateway(client, CallbackUrls("http://pp")))
            ledger = RecordingLedger()
            mpesa = system.ref(MpesaGateway, "daraja")
            deriv = system.ref(ScriptedDeriv, "agent")

            def gateway_for(command: Command) -> Any:
                return deriv if isinstance(command, CreditDeriv | FindDerivTransfer) else mpesa

            deps = SagaDeps(ledger=ledger, gateway_for=gateway_for)
            system.register(DepositActor, lambda: DepositActor(deps))
            yield World(system, sandbox, ledger, tokens, raw)


async def _settled(w: World, transaction_id: str, status: Status) -> None:
    w.sandbox.script_customer(PHONE, "accept", delay_s=8)
    await trio.sleep(120)
    await settle(w.system)
    assert (await w.state(transaction_id)).status is status


async def test_a_deposit_completes_through_the_actors(autojump_clock: trio.abc.Clock) -> None:
    async with world() as w:
        w.sandbox.script_customer(PHONE, "accept", delay_s=8)
        tx = await w.start(1)
        await trio.sleep(60)
        await settle(w.system)
        state = await w.state(tx)
        assert state.status is Status.COMPLETED
        assert state.deriv_transaction_id == 31337
        assert state.mpesa_receipt is not None
        assert w.ledger.names(tx) == [
            "deriv_float_hold", "mpesa_collected", "fx_conversion", "deriv_float_paid",
        ]
        collected = w.sandbox.world.collections
        assert [c.amount_cents for c in collected] == [state.quote.kes_cents]
        assert [r.kind for r in w.raw.items] == ["stk"]  # stored raw before processing


@pytest.mark.parametrize(
    ("behaviour", "failure"),
    [("cancel", "mpesa_cancelled"), ("wrong_pin", "mpesa_wrong_pin"),
     ("insufficient_funds", "mpesa_insufficient_funds"), ("no_answer", "mpesa_timeout")],
)
async def test_an_unpaid_deposit_fails_cleanly(
    autojump_clock: trio.abc.Clock, behaviour: str, failure: str
) -> None:
    async with world() as w:
        w.sandbox.script_customer(PHONE, behaviour, delay_s=5)
        tx = await w.start(2)
        await trio.sleep(60)
        await settle(w.system)
        state = await w.state(tx)
        assert state.status is Status.FAILED
        assert state.failure.code == failure
        assert w.ledger.names(tx) == ["deriv_float_hold", "deriv_float_released"]
        assert ScriptedDeriv.seen == []


async def test_no_callback_at_all_is_settled_by_the_stk_query(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with world() as w:
        w.sandbox.script_customer(PHONE, "no_callback", delay_s=5)
        tx = await w.start(3)
        await trio.sleep(300)
        await settle(w.system)
        state = await w.state(tx)
        assert state.status is Status.COMPLETED
        assert state.stk_queries >= 1
        assert w.raw.items == []


async def test_duplicate_callbacks_credit_deriv_once(autojump_clock: trio.abc.Clock) -> None:
    async with world() as w:
        w.sandbox.script_customer(PHONE, "duplicate_callback", delay_s=5)
        tx = await w.start(4)
        await trio.sleep(120)
        await settle(w.system)
        assert (await w.state(tx)).status is Status.COMPLETED
        assert len(w.raw.items) == 2
        assert sum(isinstance(c, CreditDeriv) for c in ScriptedDeriv.seen) == 1


async def test_deriv_refusal_after_payment_is_refunded_by_b2c(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with world() as w:
        ScriptedDeriv.refuse = True
        w.sandbox.script_customer(PHONE, "accept", delay_s=5)
        tx = await w.start(5)
        await trio.sleep(300)
        await settle(w.system)
        state = await w.state(tx)
        assert state.status is Status.REVERSED
        payouts = w.sandbox.world.payouts
        assert [(p.phone, p.amount_cents) for p in payouts] == [(PHONE, state.quote.kes_cents)]
        assert w.ledger.names(tx) == [
            "deriv_float_hold", "mpesa_collected", "deriv_float_released", "mpesa_refunded",
        ]


async def test_no_float_no_deposit(autojump_clock: trio.abc.Clock) -> None:
    async with world() as w:
        w.ledger.refuse_holds = True
        with pytest.raises(FloatUnavailable, match="cannot cover"):
            await w.start(6)
        assert w.sandbox.requests_seen("stkpush") == 0
        assert (await w.state(TX.format(6))).started is False


async def test_a_forged_callback_token_changes_nothing(autojump_clock: trio.abc.Clock) -> None:
    async with world() as w:
        w.sandbox.script_customer(PHONE, "no_callback", delay_s=5)
        tx = await w.start(7)
        forged = CallbackTokens(b"x" * 32).issue("deposit", tx)
        app = w.sandbox.callbacks  # reuse the sandbox's client to reach PenPay's route
        response = await app._http.post(f"http://pp/api/v1/callbacks/mpesa/stk/{forged}", json={})
        assert response.status_code == 404
        assert w.raw.items == []


async def test_a_deposit_that_fails_to_start_gives_the_float_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Only once it is known that no Start was recorded (as Payments asks after a
    failed Start); a retry of the same transaction then takes a hold of its own."""
    async with world() as w:
        journal = w.system.journal
        assert isinstance(journal, InMemoryJournal)
        journal.fail_appends = lambda pid: pid.startswith("deposit/")
        with pytest.raises(ActorCrashed):
            await w.start(8)
        journal.fail_appends = None
        tx = TX.format(8)
        assert w.ledger.names(tx) == ["deriv_float_hold"]  # not given back blindly
        ref = w.system.ref(DepositActor, tx)
        assert await ref.ask(AbandonIfNotStarted()) is True
        assert w.ledger.names(tx) == ["deriv_float_hold", "deriv_float_released"]
        assert w.sandbox.requests_seen("stkpush") == 0

        await w.start(8)  # the client's retry, same Idempotency-Key, same transaction
        await _settled(w, tx, Status.COMPLETED)
        assert w.ledger.names(tx) == [
            "deriv_float_hold", "deriv_float_released", "deriv_float_hold_1",
            "mpesa_collected", "fx_conversion", "deriv_float_paid_1",
        ]


async def test_a_start_whose_append_outcome_was_lost_keeps_its_float_hold(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The Start was recorded although the journal said it failed: the deposit lives,
    so its hold must stay (giving it back left a paid deposit unbookable)."""
    async with world() as w:
        journal = w.system.journal
        assert isinstance(journal, InMemoryJournal)
        lost = [1]

        def lose_one(pid: str) -> bool:
            if pid.startswith("deposit/") and lost[0]:
                lost[0] -= 1
                return True
            return False

        journal.lose_acks = lose_one
        with pytest.raises(ActorCrashed):
            await w.start(9)
        tx = TX.format(9)
        assert await w.system.ref(DepositActor, tx).ask(AbandonIfNotStarted()) is False
        assert (await w.state(tx)).started
        # Whether the STK push went out before the crash is unknown, so it is
        # never sent again (the deposit waits for a callback, then review)...
        await _settled(w, tx, Status.NEEDS_REVIEW)
        # ...and its float stays held for it until it is settled.
        assert w.ledger.names(tx) == ["deriv_float_hold"]


async def test_a_posting_refused_after_its_step_was_recorded_restarts_the_deposit(
    autojump_clock: trio.abc.Clock,
) -> None:
    """M-Pesa paid and the step is durable, but the ledger refused its posting once.

    That refusal is not the caller's business: the actor crashes and its
    recovery books the step again and goes on to Deriv. Taken as a refusal, the
    step's Deriv credit was dropped and the paid deposit waited for ever.
    """
    async with world() as w:
        w.ledger.refuse_once = "mpesa_collected"
        w.sandbox.script_customer(PHONE, "accept", delay_s=8)
        tx = await w.start(10)
        await trio.sleep(4 * 3600)
        await settle(w.system)
        assert (await w.state(tx)).status is Status.COMPLETED
        assert sum(isinstance(c, CreditDeriv) for c in ScriptedDeriv.seen) == 1
        assert w.ledger.names(tx) == [
            "deriv_float_hold", "mpesa_collected", "fx_conversion", "deriv_float_paid",
        ]
