"""A deposit parked in NEEDS_REVIEW keeps asking M-Pesa after a restart.

A deposit whose STK answer never came is parked, and its actor queries STK on
a timer (``stk_review``) until M-Pesa answers. Timers live in memory and only
the actor's recovery re-arms them; start-up woke every unfinished status but
NEEDS_REVIEW, so after a deploy a customer who had paid waited for an
operator instead of being credited when M-Pesa's query came back.
"""

from __future__ import annotations

import uuid

import trio

from penpay.sandbox.daraja.state import Endpoint, FaultKind
from penpay.sim.determinism import sim_clock
from tests.sim.scripted import onboarded_world

DEPOSIT_USD_CENTS = 1_000


async def _scenario() -> None:
    async with onboarded_world() as (world, user):
        daraja = world.boxes.daraja
        daraja.script_customer(user.phone, "no_callback", delay_s=5)  # pays; no callback
        daraja.inject_fault(Endpoint.STK_QUERY, FaultKind.HTTP_500, count=10_000)
        before = world.boxes.deriv_world.balance_cents(user.login_id)
        response = await user._authed(
            "POST", "/deposits", "deposit", headers={"Idempotency-Key": "review-resume-1"},
            json={"amount_cents": DEPOSIT_USD_CENTS, "currency": "USD"},
        )
        assert response.status_code == 202, response.text
        transaction_id = uuid.UUID(response.json()["transaction_id"])
        await trio.sleep(15 * 60)  # mock time: every query of the normal flow has failed
        assert world.durable.index.rows[transaction_id].status == "NEEDS_REVIEW"

        await world.restart()  # a deploy: the review timer is gone with the process
        daraja.clear_faults()  # M-Pesa's query answers again: the customer has paid
        await trio.sleep(2 * 3600)

        assert world.durable.index.rows[transaction_id].status == "COMPLETED"
        credited = world.boxes.deriv_world.balance_cents(user.login_id) - before
        assert credited == DEPOSIT_USD_CENTS  # once
        ledger = world.services.ledger
        assert ledger is not None
        assert all(line.balanced for line in (await ledger.trial_balance()).values())


def test_parked_deposit_settles_after_a_restart_when_mpesa_answers() -> None:
    trio.run(_scenario, clock=sim_clock())
