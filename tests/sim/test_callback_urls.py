"""Daraja is handed only callback URLs it accepts, and each one reaches PenPay.

Daraja refuses a CallBackURL that says "mpesa" or "query" (protocols.md
1.11). A withdrawal whose payout notice goes to the queue time-out URL is
settled by a Transaction Status query, whose answer now comes to a path of
its own instead of ``?query=status``: the whole round trip, in the sim.
"""

from __future__ import annotations

import re
import uuid

import trio

from penpay.sandbox.daraja.state import Endpoint, FaultKind
from penpay.sim.determinism import sim_clock
from tests.sim.scripted import onboarded_world

FORBIDDEN = re.compile(r"m-?pesa|safaricom|exe|exec|cmd|sql|query", re.IGNORECASE)
WITHDRAWAL_USD_CENTS = 1_000


async def _withdrawal_settled_by_status_query() -> None:
    async with onboarded_world() as (world, user):
        daraja = world.boxes.daraja
        daraja.inject_fault(Endpoint.B2C, FaultKind.QUEUE_TIMEOUT)  # the payout is made
        code = await user._authed("POST", "/withdrawals/verification-code", "code")
        assert code.status_code == 202, code.text
        response = await user._authed(
            "POST", "/withdrawals", "withdrawal", headers={"Idempotency-Key": "cb-url-0001"},
            json={"amount_cents": WITHDRAWAL_USD_CENTS, "currency": "USD",
                  "verification_code": world.boxes.deriv_world.latest_code(user.email)},
        )  # fmt: skip
        assert response.status_code == 202, response.text
        transaction_id = uuid.UUID(response.json()["transaction_id"])
        await trio.sleep(3600)

        assert world.durable.index.rows[transaction_id].status == "COMPLETED"
        sent = [(c.kind, c.url, c.status_code) for c in daraja.callbacks.delivered
                if c.kind != "stk"]  # fmt: skip
        assert [kind for kind, _, _ in sent] == ["b2c_timeout", "status_result"]
        for _, url, status in sent:
            assert status == 200 and url == url.lower() and not FORBIDDEN.search(url), url
        assert "/api/v1/callbacks/b2c/status/result/" in sent[1][1]
        raw = [c.kind for c in world.durable.raw_callbacks.items
               if c.transaction_id == str(transaction_id)]  # fmt: skip
        assert raw == ["b2c_timeout", "b2c_status_result"]


def test_a_withdrawal_settled_by_a_status_query_uses_neutral_callback_urls() -> None:
    trio.run(_withdrawal_settled_by_status_query, clock=sim_clock())
