"""``POST /admin/ledger/capital``: owner capital booked into a float, once per request.

With real providers the floats start at zero; this is how an operator makes
them match the money already at M-Pesa and Deriv before taking traffic.
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import trio

from penpay.sim.determinism import sim_clock
from penpay.sim.workload import Client, Stats
from penpay.sim.world import OPERATOR_EMAIL, OPERATOR_PASSWORD, SimWorld
from tests.sim.scripted import onboarded_world

PATH = "/admin/ledger/capital"


async def _float_cents(world: SimWorld, account: str) -> int:
    assert world.services.ledger is not None
    balance = await world.services.ledger.balance(account)
    return balance.debits_posted - balance.credits_posted


async def _scenario() -> None:
    async with onboarded_world() as (world, user):
        operator = Client(world.router, "10.255.255.2", "operator", world.trace, Stats())
        assert await operator.login(OPERATOR_EMAIL, OPERATOR_PASSWORD, random.Random(0))

        async def book(key: str | None, body: dict[str, Any], client: Client = operator,
                       ) -> httpx.Response:
            headers = {**client.headers, **({"Idempotency-Key": key} if key else {})}
            return await client.call("POST", PATH, "capital", headers=headers, json=body)

        before = await _float_cents(world, "mpesa_float")
        body = {"account": "mpesa_float", "amount_cents": 250_000_00, "note": "go-live top-up"}
        first = await book("capital-0001", body)
        assert first.status_code == 201, first.text
        assert first.json()["currency"] == "KES"
        assert first.json()["balance_cents"] == before + 250_000_00
        again = await book("capital-0001", body)  # a retry books nothing more
        assert (again.status_code, again.json()) == (201, first.json())
        assert await _float_cents(world, "mpesa_float") == before + 250_000_00
        other = await book("capital-0002", body)  # another request is another payment
        assert other.json()["transfer_id"] != first.json()["transfer_id"]
        assert await _float_cents(world, "mpesa_float") == before + 500_000_00

        reused = await book("capital-0001", {**body, "amount_cents": 1})
        assert reused.json()["code"] == "idempotency_key_reused"
        for bad in ({**body, "account": "fee_revenue_kes"}, {**body, "amount_cents": 0},
                    {**body, "amount_cents": True}, {**body, "note": " "}):
            refused = await book("capital-bad-" + str(len(str(bad))), bad)
            assert refused.status_code == 422, (bad, refused.text)
        assert (await book(None, body)).json()["code"] == "idempotency_key_missing"
        assert (await book("capital-user-1", body, user.client)).status_code == 403

        trail = await world.durable.audit.page()
        booked = [e for e in trail if e.action == "ledger.capital"]
        assert [(e.subject, e.payload["amount_cents"]) for e in booked] == [
            ("mpesa_float", 250_000_00), ("mpesa_float", 250_000_00),
        ]
        assert await _float_cents(world, "mpesa_float") == before + 500_000_00


def test_capital_is_booked_once_per_request_by_admins_only() -> None:
    trio.run(_scenario, clock=sim_clock())
