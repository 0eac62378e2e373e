"""What Deriv's error answer to a money call proves, and the input the actor makes of it.

Deriv's money calls have no idempotency key, so an error that does not prove
"nothing moved" must be settled from the statement: a refund (deposit) or a
failure (withdrawal) on such an error can pay the customer twice
(protocols.md 2.7, 2.10).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
from trio.testing import MockClock

from penpay.actors.deriv import (
    DerivApiError,
    DerivGateway,
    MessageConnection,
    MoneyCallVerdict,
    money_call_verdict,
)
from penpay.actors.deriv.wire import decode, encode
from penpay.actors.deriv_actor import DerivGatewayActor
from penpay.actors.saga import (
    Command,
    CreditDeriv,
    DerivCredited,
    DerivRejected,
    DerivRetryLater,
    DerivUnknown,
    Input,
    WithdrawFromDeriv,
)
from penpay.engine import ActorSystem, Clock
from penpay.sandbox.deriv import DerivWorld, FaultKind, InProcessDerivSandbox

from .conftest import AGENT, AGENT_TOKEN, FAST, JANE, JANE_TOKEN, Rig

TRANSFER = "PaymentAgentTransferError"
WITHDRAW = "PaymentAgentWithdrawError"
REFERENCE = "PenPay deposit t1 attempt 1"

NOT_DONE = [
    ("InvalidToken", "Your token has expired or is invalid."),
    ("BadSession", "The token you used is invalid in this session."),
    ("PermissionDenied", "Permission denied, requires payments scope(s)."),
    ("AuthorizationRequired", "Please log in."),
    ("InputValidationFailed", "Input validation failed: amount"),
    ("ASK_FIX_DETAILS", "Please complete your payment agent details."),
    (TRANSFER, "You are not authorized for transfers via payment agents."),
    (TRANSFER, "Invalid amount. Minimum is 10, maximum is 2000."),
    (TRANSFER, "Login ID (CR999) does not exist."),
    (TRANSFER, "Your account balance is insufficient for this transaction."),
    (WITHDRAW, "Please enter a valid payment agent ID."),
]
RETRY_LATER = [
    ("RateLimit", "You have reached the rate limit for paymentagent_transfer."),
    ("RateLimitExceeded", "Rate Limit Exceeded."),
    (TRANSFER, "Request too frequent. Please try again later."),
    (WITHDRAW, "Request too frequent. Please try again later."),
    (TRANSFER, "Sorry, this facility is temporarily disabled due to system maintenance."),
]
MAY_HAVE_MOVED = [
    ("OutputValidationFailed", "An unexpected error occurred."),
    (TRANSFER, "We have deducted 25 USD from your account. Your funds may be temporarily "
               "unavailable until the transaction is complete."),
    (TRANSFER, "Sorry, an unexpected error occurred. Please contact us via live chat."),
    (TRANSFER, "Sorry, an error occurred whilst processing your request. Please try again "
               "in one minute."),
    (WITHDRAW, "We have deducted 25 USD from your account."),
    ("InternalServerError", "Sorry, an error occurred while processing your request."),
    ("SomeCodeNobodyHasSeen", ""),
]


@pytest.mark.parametrize(("code", "message"), NOT_DONE)
def test_errors_raised_before_any_work_prove_nothing_moved(code: str, message: str) -> None:
    assert money_call_verdict(DerivApiError(code, message)) is MoneyCallVerdict.NOT_DONE


@pytest.mark.parametrize(("code", "message"), RETRY_LATER)
def test_rate_limits_and_temporary_refusals_may_be_retried(code: str, message: str) -> None:
    assert money_call_verdict(DerivApiError(code, message)) is MoneyCallVerdict.RETRY_LATER


@pytest.mark.parametrize(("code", "message"), MAY_HAVE_MOVED)
def test_any_other_error_may_have_moved_money(code: str, message: str) -> None:
    error = DerivApiError(code, message)
    assert money_call_verdict(error) is MoneyCallVerdict.MAY_HAVE_MOVED
    assert error.money_may_have_moved


class Rewriting:
    """The client end of a socket on which Deriv's successful answer to ``call``
    arrives as ``error`` instead: the work was done, the answer says otherwise
    (e.g. the server's own output failed its schema, protocols.md 2.10)."""

    def __init__(self, inner: MessageConnection, call: str, error: dict[str, str]) -> None:
        self.inner, self.call, self.error = inner, call, error

    async def send_message(self, message: str) -> None:
        await self.inner.send_message(message)

    async def get_message(self) -> str:
        text = await self.inner.get_message()
        msg = decode(text)
        if msg.get("msg_type") == self.call and "error" not in msg:
            return encode({"echo_req": msg["echo_req"], "msg_type": self.call,
                           "req_id": msg["req_id"], "error": self.error})
        return text

    async def aclose(self) -> None:
        await self.inner.aclose()


def _actor(gateway: DerivGateway, world: DerivWorld) -> DerivGatewayActor:
    async def jane_token(user_id: str) -> str | None:
        return JANE_TOKEN

    actor = DerivGatewayActor(gateway, AGENT, jane_token)
    actor.system = cast(ActorSystem, SimpleNamespace(clock=Clock(world.now())))
    return actor


async def _answer_through(
    world: DerivWorld, call: str, error: dict[str, str], command: Command
) -> Input | None:
    """``command`` through a gateway whose sockets turn ``call``'s success into ``error``."""
    async with trio.open_nursery() as nursery:
        box = InProcessDerivSandbox(world)
        await nursery.start(box.run)

        @asynccontextmanager
        async def connect() -> AsyncIterator[Any]:
            async with box.connect() as inner:
                yield Rewriting(inner, call, error)

        gateway = DerivGateway(connect, AGENT_TOKEN, rng=random.Random(1), config=FAST)
        await nursery.start(gateway.run)
        await gateway.wait_connected()
        answer = await _actor(gateway, world).call(command, "u")
        nursery.cancel_scope.cancel()
    return answer


APPLIED_THEN_ERROR = [
    {"code": "OutputValidationFailed", "message": "An unexpected error occurred."},
    {"code": TRANSFER, "message": "Sorry, an unexpected error occurred. Please contact us via "
                                  "live chat."},
]


@pytest.mark.parametrize("error", APPLIED_THEN_ERROR)
async def test_a_credit_deriv_made_but_answered_with_an_error_is_unknown(
    autojump_clock: MockClock, world: DerivWorld, error: dict[str, str]
) -> None:
    """Regression: this was DerivRejected, and the deposit refunded a credited customer."""
    command = CreditDeriv(JANE, 2_500, REFERENCE)
    answer = await _answer_through(world, "paymentagent_transfer", error, command)
    assert [m.description for m in world.moves] == [REFERENCE]  # the USD reached Jane
    assert isinstance(answer, DerivUnknown), answer


@pytest.mark.parametrize("error", APPLIED_THEN_ERROR)
async def test_a_withdrawal_deriv_made_but_answered_with_an_error_is_unknown(
    autojump_clock: MockClock, world: DerivWorld, error: dict[str, str]
) -> None:
    """Regression: this was DerivRejected, and the withdrawal failed with the USD moved."""
    reference = "PenPay withdrawal t1"
    code = world.issue_code("jane@example.com", "paymentagent_withdraw")
    assert code is not None
    command = WithdrawFromDeriv(2_500, code, reference)
    answer = await _answer_through(world, "paymentagent_withdraw", error, command)
    assert [m.description for m in world.moves] == [reference]
    assert isinstance(answer, DerivUnknown), answer


async def test_a_business_refusal_is_still_a_rejection(
    autojump_clock: MockClock, rig: Rig
) -> None:
    answer = await _actor(rig.gateway, rig.world).call(CreditDeriv(JANE, 999, REFERENCE), "u")
    assert isinstance(answer, DerivRejected) and "Minimum is 10" in answer.message


async def test_request_too_frequent_is_retry_later(autojump_clock: MockClock, rig: Rig) -> None:
    """Regression: BI102 was DerivRejected, and the deposit refunded a paid customer."""
    rig.world.inject_fault("paymentagent_transfer", FaultKind.ERROR)  # BI102, nothing applied
    answer = await _actor(rig.gateway, rig.world).call(CreditDeriv(JANE, 2_500, REFERENCE), "u")
    assert isinstance(answer, DerivRetryLater), answer
    assert rig.world.moves == []


async def test_a_rate_limit_is_retry_later(autojump_clock: MockClock, rig: Rig) -> None:
    rig.world.set_rate_limit(1)  # the agent's budget is spent by another consumer
    answer = await _actor(rig.gateway, rig.world).call(CreditDeriv(JANE, 2_500, REFERENCE), "u")
    assert isinstance(answer, DerivRetryLater) and answer.code == "RateLimit", answer


async def test_a_withdrawal_refused_for_now_is_resent_with_the_code_kept_in_memory(
    autojump_clock: MockClock, rig: Rig
) -> None:
    """The transaction resends without the code (it never keeps one); the actor has it.

    Only a rate limit leaves the code alive: it refuses the call before Deriv
    checks the code (which deletes it, protocols.md 2.8)."""
    reference = "PenPay withdrawal t2"
    actor = _actor(rig.gateway, rig.world)
    code = rig.world.issue_code("jane@example.com", "paymentagent_withdraw")
    assert code is not None
    rig.world.inject_fault("paymentagent_withdraw", FaultKind.ERROR, code="RateLimitExceeded",
                           message="You have reached the withdrawal rate limit.")
    first = await actor.call(WithdrawFromDeriv(2_500, code, reference), "u")
    assert isinstance(first, DerivRetryLater), first
    again = await actor.call(WithdrawFromDeriv(2_500, "", reference), "u")
    assert isinstance(again, DerivCredited), again
    assert [m.description for m in rig.world.moves] == [reference]
    # Used: a third send of the reference has no code left to send.
    third = await actor.call(WithdrawFromDeriv(2_500, "", reference), "u")
    assert isinstance(third, DerivRejected) and third.code == "InvalidToken"


@pytest.mark.parametrize("refusal", ["request too frequent", "maintenance"])
async def test_a_withdrawal_refused_after_the_code_check_fails_for_a_new_code(
    autojump_clock: MockClock, rig: Rig, refusal: str
) -> None:
    """BI102 and maintenance come after the code check, which deleted the code: a
    resend could only be refused as InvalidToken. It fails now, naming why."""
    reference = "PenPay withdrawal t9"
    actor = _actor(rig.gateway, rig.world)
    code = rig.world.issue_code("jane@example.com", "paymentagent_withdraw")
    assert code is not None
    if refusal == "maintenance":
        rig.world.payments_suspended = True
    else:
        rig.world.inject_fault("paymentagent_withdraw", FaultKind.ERROR)  # BI102
    answer = await actor.call(WithdrawFromDeriv(2_500, code, reference), "u")
    assert isinstance(answer, DerivRejected), answer
    assert answer.code == "PaymentAgentWithdrawError" and "used up" in answer.message
    assert rig.world.moves == []
    rig.world.payments_suspended = False
    again = await actor.call(WithdrawFromDeriv(2_500, code, reference), "u")
    assert isinstance(again, DerivRejected) and again.code == "InvalidToken"  # gone at Deriv
