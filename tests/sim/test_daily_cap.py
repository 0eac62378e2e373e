"""A user's daily cap holds when their requests arrive side by side.

The cap counts the user's reserved transactions, so checking it and
reserving the new row must be one step. Checked side by side, each request
sees the others' amounts missing and all pass. Against PostgreSQL each step
is a round trip, so the index here takes one (mock) millisecond per
question, as a database would.
"""

from __future__ import annotations

from typing import Any

import trio

from penpay.actors.policy import Limits
from penpay.sim.determinism import sim_clock
from tests.sim.scripted import onboarded_world

CAP_USD_CENTS = 2_500
DEPOSIT_USD_CENTS = 1_000
ROUND_TRIP_S = 0.001


def _slow(index: Any) -> None:
    """Answer every question about used amounts one round trip after it was read."""
    used = index.used_usd_cents

    async def after_a_round_trip(*args: Any, **kwargs: Any) -> int:
        answer = int(await used(*args, **kwargs))
        await trio.sleep(ROUND_TRIP_S)
        return answer

    index.used_usd_cents = after_a_round_trip


async def _scenario() -> None:
    async with onboarded_world() as (world, user):
        payments = world.services.payments
        assert payments is not None
        payments.limits = Limits(daily_cap_usd_cents=CAP_USD_CENTS)
        _slow(world.durable.index)

        answers: list[tuple[int, str]] = []

        async def deposit(n: int) -> None:
            # Each from its own phone: the per-phone prompt limit is not what stops them.
            response = await user._authed(
                "POST", "/deposits", "deposit", headers={"Idempotency-Key": f"{n:032x}"},
                json={"amount_cents": DEPOSIT_USD_CENTS, "currency": "USD",
                      "phone_number": f"07110000{n:02d}"},
            )
            answers.append((response.status_code, response.json().get("code", "")))

        async with trio.open_nursery() as clients:
            for n in range(3):
                clients.start_soon(deposit, n)

        assert sorted(answers) == [(202, ""), (202, ""), (422, "daily_limit_exceeded")]
        reserved = [r for r in world.durable.index.rows.values() if r.type == "deposit"]
        assert sum(r.usd_cents for r in reserved) == 2 * DEPOSIT_USD_CENTS
        assert payments._admitting == {}  # nothing kept per user once they are done


def test_side_by_side_deposits_cannot_pass_the_daily_cap_together() -> None:
    trio.run(_scenario, clock=sim_clock())
