"""``run.py serve`` answers ``GET /me`` with the configured limits and today's usage.

The server used to build its services without ``limits_for``, so ``/me``
showed API.md's defaults with nothing used, whatever the settings said.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_penpay

pytestmark = [pytest.mark.integration, pytest.mark.storage]


async def test_me_shows_the_configured_limits_and_todays_deposits(tmp_path: Path) -> None:
    async with running_penpay(
        tmp_path, deposit_min_usd_cents=300, withdrawal_max_usd_cents=90_000,
        daily_cap_usd_cents=250_000,
    ) as pp:
        await pp.script("254700000141", "no_answer")  # the deposit stays reserved; it counts
        auth = await pp.user("0700000141")
        await pp.deposit(auth, amount_cents=1_500)
        me = await pp.http.get("/me", headers=auth)
    assert me.status_code == 200, me.text
    assert me.json()["limits"] == {
        "deposit": {"min_cents": 300, "max_cents": 100_000, "daily_cents": 250_000,
                    "used_today_cents": 1_500},
        "withdrawal": {"min_cents": 500, "max_cents": 90_000, "daily_cents": 250_000,
                       "used_today_cents": 0},
    }  # fmt: skip
