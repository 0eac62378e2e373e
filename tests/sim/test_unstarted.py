"""A deposit whose Start failed, and whose outcome could not be learnt, is closed later.

Found by the simulation (seed 7028 at 1,000 transactions): the deposit actor
crashed on Start (the ledger was unavailable), then crashed again when asked
whether it had started, so its reserved index row stayed PENDING for ever.
"""

from __future__ import annotations

import trio

from penpay.actors.deposit import Start
from penpay.actors.payments import REFUSED, UNSTARTED_GRACE_S, UNSTARTED_SWEEP_INTERVAL_S
from penpay.actors.transaction import AbandonIfNotStarted, DepositActor
from penpay.sim.determinism import sim_clock
from tests.sim.scripted import crash_on, onboarded_world


async def _scenario() -> None:
    async with onboarded_world() as (world, user):
        # Start crashes, and so does the first question about it.
        crashes: dict[type, int] = {Start: 1, AbandonIfNotStarted: 1}
        crash_on(world, DepositActor, crashes)
        response = await user._authed(
            "POST", "/deposits", "deposit", headers={"Idempotency-Key": "k" * 32},
            json={"amount_cents": 500, "currency": "USD"},
        )
        assert response.status_code == 503, response.text
        assert crashes == {Start: 0, AbandonIfNotStarted: 0}
        [row] = world.durable.index.rows.values()
        assert row.status == "PENDING"  # its fate could not be learnt at the time

        await trio.sleep(UNSTARTED_GRACE_S + UNSTARTED_SWEEP_INTERVAL_S)
        assert world.durable.index.rows[row.id].status == REFUSED
        hold = await world.services.ledger.balance("deriv_float")  # type: ignore[union-attr]
        assert hold.credits_pending == 0  # no float is left held for it

        # A retry with the same Idempotency-Key starts the same transaction afresh.
        again = await user._authed(
            "POST", "/deposits", "deposit", headers={"Idempotency-Key": "k" * 32},
            json={"amount_cents": 500, "currency": "USD"},
        )
        assert again.status_code == 202, again.text
        assert again.json()["transaction_id"] == str(row.id)
        assert world.durable.index.rows[row.id].status != REFUSED


def test_a_deposit_whose_start_failed_unknowably_is_closed_by_the_sweep() -> None:
    trio.run(_scenario, clock=sim_clock())
