"""What a retried or reused Idempotency-Key and a refused request do to a user's day.

Driven through the HTTP routes of the simulated world: the key store (which
forgets a finished key after 72 hours) sits in front of the transactions
index (which ties a key to its transaction for good).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import trio

from penpay.actors.deposit import Start
from penpay.actors.index import REFUSED
from penpay.actors.transaction import DepositActor
from penpay.sim.determinism import sim_clock
from penpay.sim.workload import User
from tests.sim.scripted import crash_on, onboarded_world

#: Longer than the per-phone STK limit's spacing, so each deposit may prompt.
BETWEEN_DEPOSITS_S = 400.0


async def _post(user: User, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
    await trio.sleep(BETWEEN_DEPOSITS_S)
    return await user._authed(
        "POST", path, path.strip("/"), headers={"Idempotency-Key": key}, json=body
    )


def _usd(cents: int) -> dict[str, Any]:
    return {"amount_cents": cents, "currency": "USD"}


async def _a_refused_request_uses_none_of_the_cap() -> None:
    async with onboarded_world() as (world, user):
        crash_on(world, DepositActor, {Start: 1})  # nothing moves; the row is closed
        refused = await _post(user, "/deposits", "refused-0001", _usd(100_000))
        assert refused.status_code == 503, refused.text
        [row] = world.durable.index.rows.values()
        assert row.status == REFUSED
        assert (await _post(user, "/deposits", "second-0001", _usd(100_000))).status_code == 202
        # USD 1,000 of the USD 2,000 cap is used: USD 500 more is allowed.
        third = await _post(user, "/deposits", "third-0001", _usd(50_000))
        assert third.status_code == 202, third.text


def test_a_refused_request_uses_none_of_the_daily_cap() -> None:
    trio.run(_a_refused_request_uses_none_of_the_cap, clock=sim_clock())


async def _a_retry_finds_its_transaction_at_the_cap() -> None:
    async with onboarded_world() as (world, user):
        assert (await _post(user, "/deposits", "earlier-0001", _usd(50_000))).status_code == 202
        # Start takes effect, but its answer is lost: the client gets a 503.
        crash_on(world, DepositActor, {Start: 1}, after_handling=True)
        lost = await _post(user, "/deposits", "retried-0001", _usd(100_000))
        assert lost.status_code == 503, lost.text
        # USD 500 + 1,000 reserved, and the retry's own 1,000 must not count twice.
        again = await _post(user, "/deposits", "retried-0001", _usd(100_000))
        assert again.status_code == 202, again.text
        row = world.durable.index.rows[uuid.UUID(again.json()["transaction_id"])]
        assert row.idempotency_key == "retried-0001"
        assert len(world.durable.index.rows) == 2


def test_a_retry_after_a_lost_answer_finds_its_transaction_at_the_cap() -> None:
    trio.run(_a_retry_finds_its_transaction_at_the_cap, clock=sim_clock())


async def _a_key_reused_after_three_days() -> None:
    async with onboarded_world() as (world, user):
        first = await _post(user, "/deposits", "reused-0001", _usd(1_000))
        assert first.status_code == 202, first.text
        deposit_id = first.json()["transaction_id"]
        await trio.sleep(74 * 3600)  # the key store has forgotten the key

        code = await user._authed("POST", "/withdrawals/verification-code", "code")
        assert code.status_code == 202, code.text
        verification_code = world.boxes.deriv_world.latest_code(user.email)
        balance = world.boxes.deriv_world.balance_cents(user.login_id)
        other = await _post(user, "/withdrawals", "reused-0001", {
            **_usd(600), "verification_code": verification_code,
        })
        assert other.status_code == 422, other.text
        assert other.json()["code"] == "idempotency_key_reused"
        await trio.sleep(600)
        assert world.boxes.deriv_world.balance_cents(user.login_id) == balance
        [row] = world.durable.index.rows.values()
        assert (row.type, row.status) == ("deposit", "COMPLETED")

        await trio.sleep(74 * 3600)
        same = await _post(user, "/deposits", "reused-0001", _usd(1_000))
        assert same.status_code == 202, same.text
        assert same.json()["transaction_id"] == deposit_id  # no second deposit
        assert len(world.durable.index.rows) == 1


def test_a_key_reused_days_later_never_names_another_transaction() -> None:
    trio.run(_a_key_reused_after_three_days, clock=sim_clock())
