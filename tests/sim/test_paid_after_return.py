"""M-Pesa pays a payout after an operator sent the withdrawal's USD back.

The payout's outcome stayed unknown (no result callback, every Transaction
Status query failed), so the withdrawal was parked; an operator reversed it
and the USD went back to the user's Deriv account. Then M-Pesa's result
arrives: the payout was made. The user was paid twice. That used to be
ignored, so the ledger's M-Pesa float no longer matched M-Pesa's own and
nobody was told; now the payout is booked (what the user owes sits in
suspense) and an operator is alerted.
"""

from __future__ import annotations

import logging
import uuid

import pytest
import trio

from penpay.actors.ledger import Side
from penpay.actors.transaction import GetState, WithdrawalActor
from penpay.sandbox.daraja import wire
from penpay.sandbox.daraja.state import Endpoint, FaultKind
from penpay.sim.determinism import sim_clock
from penpay.sim.workload import Client
from penpay.sim.world import OPERATOR_EMAIL, OPERATOR_PASSWORD
from tests.sim.scripted import onboarded_world

WITHDRAWAL_USD_CENTS = 5_000


async def _scenario() -> None:
    async with onboarded_world() as (world, user):
        daraja, deriv = world.boxes.daraja, world.boxes.deriv_world
        ledger = world.services.ledger
        assert ledger is not None
        daraja.inject_fault(Endpoint.B2C, FaultKind.NO_CALLBACK, count=1)  # pays, silently
        daraja.inject_fault(Endpoint.TRANSACTION_STATUS, FaultKind.HTTP_500, count=10_000)
        before_usd = deriv.balance_cents(user.login_id)

        response = await user._authed("POST", "/withdrawals/verification-code", "code")
        assert response.status_code == 202, response.text
        code = deriv.latest_code(user.email)
        assert code is not None
        response = await user._authed(
            "POST", "/withdrawals", "withdrawal", headers={"Idempotency-Key": "paid-twice-1"},
            json={"amount_cents": WITHDRAWAL_USD_CENTS, "currency": "USD",
                  "verification_code": code},
        )
        assert response.status_code == 202, response.text
        transaction_id = response.json()["transaction_id"]
        await trio.sleep(3 * 3600)  # mock time: every status query has failed
        assert world.durable.index.rows[uuid.UUID(transaction_id)].status == "NEEDS_REVIEW"
        paid = daraja.world.payouts
        assert len(paid) == 1  # M-Pesa did pay; PenPay cannot know it yet

        operator = Client(world.router, "10.255.255.2", "op", world.trace, user.stats)
        assert await operator.login(OPERATOR_EMAIL, OPERATOR_PASSWORD, user.rng)
        response = await operator.call(
            "POST", f"/admin/transactions/{transaction_id}/resolve", "resolve",
            headers=operator.headers,
            json={"action": "reverse", "note": "no payout on the statement yet"},
        )
        assert response.status_code == 200, response.text
        await trio.sleep(600)
        assert world.durable.index.rows[uuid.UUID(transaction_id)].status == "REVERSED"
        assert deriv.balance_cents(user.login_id) == before_usd  # the USD came back

        # M-Pesa's result, very late: the payout was made.
        payment = daraja.world.b2c[paid[0].originator_conversation_id]
        name = daraja.world.customer(payment.phone).name
        body = wire.b2c_result(payment, daraja.world.accounts, name)
        daraja.callbacks.schedule("b2c_result", payment.result_url, body, delay_s=0.0)
        await trio.sleep(60)

        state = await world.system.ref(WithdrawalActor, transaction_id).ask(GetState())
        assert state.status.value == "REVERSED"
        assert state.paid_after_return and state.mpesa_receipt == paid[0].receipt
        balances = await ledger.balances()
        accounts = daraja.world.accounts
        mpesa = balances["mpesa_float"].net_posted(Side.DEBIT)
        assert mpesa == accounts.working_cents + accounts.utility_cents  # M-Pesa's own
        owed = balances["suspense_kes"].net_posted(Side.DEBIT)
        assert owed == paid[0].amount_cents
        assert all(line.balanced for line in (await ledger.trial_balance()).values())


def test_a_payout_paid_after_the_usd_went_back_is_booked_and_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="penpay.actors.transaction")
    trio.run(_scenario, clock=sim_clock())
    alerts = [r.getMessage() for r in caplog.records if "paid twice" in r.getMessage()]
    assert len(alerts) == 1, alerts
