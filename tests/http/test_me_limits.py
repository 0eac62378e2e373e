"""``GET /me`` reports the limits payments enforce, and what the user moved today.

It used to answer API.md's defaults with nothing used, whatever the
configuration and whatever the user had moved: a client showing "2000.00
left today" after a 1000.00 deposit would have its next one refused.
"""

from __future__ import annotations

from typing import Any

import trio

from penpay.actors.policy import Limits
from penpay.sim.determinism import sim_clock
from tests.sim.scripted import onboarded_world

CONFIGURED = Limits(
    deposit_min_usd_cents=300, deposit_max_usd_cents=150_000,
    withdrawal_min_usd_cents=700, withdrawal_max_usd_cents=90_000,
    daily_cap_usd_cents=250_000,
)  # fmt: skip
DEPOSIT_USD_CENTS = 100_000


async def _me_after_a_deposit() -> dict[str, Any]:
    async with onboarded_world() as (world, user):
        payments = world.services.payments
        assert payments is not None
        payments.limits = CONFIGURED
        response = await user._authed(
            "POST", "/deposits", "deposit", headers={"Idempotency-Key": "me-limits-0001"},
            json={"amount_cents": DEPOSIT_USD_CENTS, "currency": "USD"},
        )
        assert response.status_code == 202, response.text
        me = await user._authed("GET", "/me", "me")
        assert me.status_code == 200, me.text
    body: dict[str, Any] = me.json()
    return body


def test_me_reports_configured_limits_and_todays_usage() -> None:
    me = trio.run(_me_after_a_deposit, clock=sim_clock())
    assert me["limits"] == {
        "deposit": {"min_cents": 300, "max_cents": 150_000, "daily_cents": 250_000,
                    "used_today_cents": DEPOSIT_USD_CENTS},
        "withdrawal": {"min_cents": 700, "max_cents": 90_000, "daily_cents": 250_000,
                       "used_today_cents": 0},
    }  # fmt: skip
