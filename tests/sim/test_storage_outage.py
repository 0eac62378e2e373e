"""A storage outage delays a transaction; it never parks it.

The server supervises transactions with ``SupervisionPolicy.persistent()``;
the simulated world used the default policy, so a deposit failing more
often than the restart intensity was parked with its float held (found by
the simulation, seed 18008). Both now register transactions the same way.
"""

from __future__ import annotations

import uuid

import trio

from penpay.actors.transaction import DepositActor
from penpay.engine import ActorStatus
from penpay.sim.determinism import sim_clock
from tests.sim.scripted import onboarded_world

FAILED_APPENDS = 20  # far beyond the default restart intensity (5 a minute)


async def _scenario() -> None:
    async with onboarded_world() as (world, user):
        failures = 0

        def storage_down(persistence_id: str) -> bool:
            nonlocal failures
            if persistence_id.startswith("deposit/") and failures < FAILED_APPENDS:
                failures += 1
                return failures > 1  # Start itself is journaled; what follows is not
            return False

        world.durable.journal.fail_appends = storage_down
        accepted = await user._authed(
            "POST", "/deposits", "deposit", headers={"Idempotency-Key": uuid.uuid4().hex},
            json={"amount_cents": 1_000, "currency": "USD"},
        )
        assert accepted.status_code == 202, accepted.text
        transaction_id = accepted.json()["transaction_id"]
        await trio.sleep(900)
        assert failures == FAILED_APPENDS
        info = world.system.info(DepositActor, transaction_id)
        assert info is None or info.status is not ActorStatus.FAILED
        view = await user._authed("GET", f"/transactions/{transaction_id}", "view")
        assert view.json()["status"] == "COMPLETED", view.text


def test_a_storage_outage_delays_a_deposit_and_never_parks_it() -> None:
    trio.run(_scenario, clock=sim_clock())
