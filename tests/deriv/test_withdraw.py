"""verify_email codes and paymentagent_withdraw through the gateway (mock clock)."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from penpay.actors.deriv import (
    BadSession,
    InvalidToken,
    OutcomeUnknown,
    PaymentAgentWithdrawError,
    PermissionDenied,
)
from penpay.sandbox.deriv import FaultKind

from .conftest import AGENT, JANE, JANE_READ_TOKEN, JANE_TOKEN, JOHN_TOKEN, Rig

JANE_EMAIL = "jane@example.com"


async def code_for(rig: Rig, token: str = JANE_TOKEN, email: str = JANE_EMAIL) -> str:
    await rig.gateway.request_withdrawal_code(token, email)
    code = rig.world.latest_code(email)
    assert code is not None
    return code


async def test_code_is_mailed_and_withdrawal_moves_money(
    autojump_clock: MockClock, rig: Rig
) -> None:
    code = await code_for(rig)
    assert len(code) == 8 and code.isalnum()
    (mail,) = rig.world.mailbox(JANE_EMAIL)
    assert mail.purpose == "paymentagent_withdraw"
    result = await rig.gateway.paymentagent_withdraw(
        JANE_TOKEN, AGENT, 2_500, "USD", code, "wd 0193"
    )
    assert result.paymentagent_name == "PenPay Agent"
    assert isinstance(result.transaction_id, int) and not result.dry_run
    assert rig.world.balance_cents(JANE) == 47_500
    assert await rig.gateway.wait_for_balance(lambda c: c == 1_002_500) == 1_002_500
    agent_row = rig.world.statement_of(AGENT)[0]
    assert agent_row.action_type == "deposit" and agent_row.amount_cents == 2_500
    assert agent_row.longcode.startswith(f"Transfer from {JANE} to Payment Agent PenPay Agent")
    assert agent_row.longcode.endswith(". Client note: wd 0193")


async def test_code_is_single_use(autojump_clock: MockClock, rig: Rig) -> None:
    code = await code_for(rig)
    await rig.gateway.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", code, "a")
    with pytest.raises(InvalidToken) as info:
        await rig.gateway.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", code, "b")
    assert info.value.message == "Your token has expired or is invalid."


async def test_latest_code_wins(autojump_clock: MockClock, rig: Rig) -> None:
    first = await code_for(rig)
    second = await code_for(rig)
    assert first != second
    with pytest.raises(InvalidToken):
        await rig.gateway.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", first, "a")
    await rig.gateway.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", second, "a")


async def test_code_expires_after_an_hour(autojump_clock: MockClock, rig: Rig) -> None:
    code = await code_for(rig)
    await trio.sleep(3_599)
    dry = await rig.gateway.paymentagent_withdraw(
        JANE_TOKEN, AGENT, 1_000, "USD", code, "a", dry_run=True
    )
    assert dry.dry_run and dry.transaction_id is None
    await trio.sleep(1)
    with pytest.raises(InvalidToken):
        await rig.gateway.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", code, "a")
    assert rig.world.moves == []


async def test_code_of_another_email_is_bad_session(autojump_clock: MockClock, rig: Rig) -> None:
    code = await code_for(rig, JOHN_TOKEN, "john@example.com")
    with pytest.raises(BadSession) as info:
        await rig.gateway.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", code, "a")
    assert info.value.message == (
        "The token you used is invalid in this session. Please get a new token and try again."
    )


async def test_invalid_code(autojump_clock: MockClock, rig: Rig) -> None:
    with pytest.raises(InvalidToken):
        await rig.gateway.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", "ABCDEFGH", "a")


@pytest.mark.parametrize(
    ("amount_cents", "agent", "message"),
    [
        (999, AGENT, "Invalid amount. Minimum is 10, maximum is 2000."),
        (1_000, "CR1000002", "Please enter a valid payment agent ID."),
        (1_000, JANE, "Please enter a valid payment agent ID."),
    ],
)
async def test_withdraw_refusals(
    autojump_clock: MockClock, rig: Rig, amount_cents: int, agent: str, message: str
) -> None:
    code = await code_for(rig)
    with pytest.raises(PaymentAgentWithdrawError) as info:
        await rig.gateway.paymentagent_withdraw(JANE_TOKEN, agent, amount_cents, "USD", code, "")
    assert info.value.code == "PaymentAgentWithdrawError"
    assert info.value.message == message


async def test_withdraw_insufficient_balance_and_caps(autojump_clock: MockClock, rig: Rig) -> None:
    rig.world.set_balance(JANE, 1_500)
    with pytest.raises(PaymentAgentWithdrawError) as info:
        await rig.gateway.paymentagent_withdraw(
            JANE_TOKEN, AGENT, 2_000, "USD", "x" * 8, "", dry_run=True
        )
    assert info.value.message == "Your account balance is insufficient for this transaction."
    rig.world.set_balance(JANE, 10_000_000)
    rig.world.account(JANE).withdrawal_caps.daily_count_max = 1
    await rig.gateway.paymentagent_withdraw(
        JANE_TOKEN, AGENT, 1_000, "USD", await code_for(rig), ""
    )
    with pytest.raises(PaymentAgentWithdrawError) as info:
        await rig.gateway.paymentagent_withdraw(
            JANE_TOKEN, AGENT, 1_000, "USD", await code_for(rig), ""
        )
    assert "maximum allowable transactions for today" in info.value.message
    caps = rig.world.account(JANE).withdrawal_caps
    caps.daily_count_max = 20
    caps.weekday_amount_cents_max = caps.weekend_amount_cents_max = 2_500
    with pytest.raises(PaymentAgentWithdrawError) as info:
        await rig.gateway.paymentagent_withdraw(
            JANE_TOKEN, AGENT, 2_000, "USD", await code_for(rig), ""
        )
    assert "maximum allowable withdrawal amount for today" in info.value.message


async def test_withdraw_needs_payments_scope(autojump_clock: MockClock, rig: Rig) -> None:
    with pytest.raises(PermissionDenied):
        await rig.gateway.paymentagent_withdraw(
            JANE_READ_TOKEN, AGENT, 1_000, "USD", "x" * 8, "", dry_run=True
        )


async def test_withdraw_drop_after_apply_is_unknown(autojump_clock: MockClock, rig: Rig) -> None:
    code = await code_for(rig)
    rig.world.inject_fault("paymentagent_withdraw", FaultKind.DROP_AFTER_APPLY)
    with pytest.raises(OutcomeUnknown) as info:
        await rig.gateway.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", code, "wd-x")
    assert info.value.request["verification_code"] == "<not shown>"
    assert len(rig.world.moves) == 1
