"""Deriv saying "not now" delays a transaction; it neither refunds nor fails it.

A paid deposit whose credit Deriv refused with BI102 "Request too frequent"
used to be refunded at once, and a withdrawal refused so failed, although
nothing had moved and the same call would have gone through a little later.
Here the real shell, gateway actor and sandboxes carry the resend: the timer,
the same reference, and (for a withdrawal) the verification code that only
the gateway actor still holds. A withdrawal refusal Deriv makes after its
code check (BI102, maintenance) used the code up: that withdrawal fails,
with nothing moved, for a new code.
"""

from __future__ import annotations

import uuid

import trio

from penpay.sandbox.daraja import Behaviour
from penpay.sandbox.deriv import FaultKind
from penpay.sim.determinism import sim_clock
from penpay.sim.workload import User
from penpay.sim.world import AGENT_LOGIN_ID, SimWorld
from tests.sim.scripted import onboarded_world

USD_CENTS = 1_500
REFUSALS = 2  # Deriv answers BI102 to the first two sends


async def _submit(user: User, path: str, body: dict[str, object]) -> uuid.UUID:
    response = await user._authed(
        "POST", path, "busy", headers={"Idempotency-Key": f"busy-{path}"}, json=body
    )
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["transaction_id"])


def _status(world: SimWorld, transaction_id: uuid.UUID) -> str:
    return world.durable.index.rows[transaction_id].status


async def _deposit_scenario() -> None:
    async with onboarded_world() as (world, user):
        deriv = world.boxes.deriv_world
        world.boxes.daraja.script_customer(user.phone, Behaviour.ACCEPT, delay_s=5)
        busy = deriv.inject_fault("paymentagent_transfer", FaultKind.ERROR, times=REFUSALS)
        before = deriv.balance_cents(user.login_id)
        transaction_id = await _submit(
            user, "/deposits", {"amount_cents": USD_CENTS, "currency": "USD"}
        )
        await trio.sleep(30 * 60)
        assert _status(world, transaction_id) == "COMPLETED"
        assert deriv.balance_cents(user.login_id) - before == USD_CENTS  # once
        transfers = [m for m in deriv.moves if m.kind == "paymentagent_transfer"]
        assert len(transfers) == 1
        assert busy.fired == REFUSALS


async def _withdrawal_scenario(refusal: str) -> None:
    async with onboarded_world() as (world, user):
        deriv = world.boxes.deriv_world
        if deriv.balance_cents(user.login_id) < USD_CENTS:
            deriv.paymentagent_transfer(
                AGENT_LOGIN_ID, transfer_to=user.login_id, amount_cents=USD_CENTS,
                currency="USD", description="funds", dry_run=False,
            )
        response = await user._authed("POST", "/withdrawals/verification-code", "code")
        assert response.status_code == 202, response.text
        code = deriv.latest_code(user.email)
        assert code is not None
        if refusal == "rate limit":  # before the code check: the code lives on
            busy = deriv.inject_fault("paymentagent_withdraw", FaultKind.ERROR, times=REFUSALS,
                                      code="RateLimitExceeded", message="Rate limit exceeded.")
        else:  # BI102 "Request too frequent", after the code check
            busy = deriv.inject_fault("paymentagent_withdraw", FaultKind.ERROR, times=REFUSALS)
        before = deriv.balance_cents(user.login_id)
        transaction_id = await _submit(user, "/withdrawals", {
            "amount_cents": USD_CENTS, "currency": "USD", "verification_code": code,
        })
        await trio.sleep(30 * 60)
        if refusal == "rate limit":
            assert _status(world, transaction_id) == "COMPLETED"
            assert before - deriv.balance_cents(user.login_id) == USD_CENTS  # once
            assert busy.fired == REFUSALS
        else:
            assert _status(world, transaction_id) == "FAILED"
            assert deriv.balance_cents(user.login_id) == before
            assert busy.fired == 1  # never resent: the code was used up


def test_a_deposit_deriv_refuses_for_now_is_credited_once_later() -> None:
    trio.run(_deposit_scenario, clock=sim_clock())


def test_a_withdrawal_deriv_rate_limits_is_made_once_later() -> None:
    trio.run(_withdrawal_scenario, "rate limit", clock=sim_clock())


def test_a_withdrawal_refused_after_its_code_check_fails_with_nothing_moved() -> None:
    trio.run(_withdrawal_scenario, "request too frequent", clock=sim_clock())
