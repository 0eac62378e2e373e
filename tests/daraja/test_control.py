"""The ``/__sandbox__/`` control API, driven over HTTP like an external test would."""

from __future__ import annotations

import trio
from trio.testing import MockClock

from tests.daraja.conftest import PHONE, Env

CB = "http://penpay.test/cb/stk/control"


async def test_script_customer_and_read_records(env: Env, autojump_clock: MockClock) -> None:
    response = await env.http.put(
        f"/__sandbox__/customers/{PHONE}",
        json={"behaviour": "cancel", "delay_s": 2, "balance_cents": 12345},
    )
    assert response.json()["behaviour"] == "cancel"
    assert response.json()["balance_cents"] == 12345
    bad = await env.http.put(f"/__sandbox__/customers/{PHONE}", json={"behaviour": "dance"})
    assert bad.status_code == 400

    await env.client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    await env.receiver.wait_for(1)
    callbacks = (await env.http.get("/__sandbox__/callbacks")).json()
    [delivered] = callbacks["delivered"]
    assert delivered["url"] == CB and delivered["status_code"] == 200
    assert delivered["body"]["Body"]["stkCallback"]["ResultCode"] == 1032
    assert delivered["source_address"] == "196.201.212.69"
    assert callbacks["pending"] == []
    assert (await env.http.get("/__sandbox__/collections")).json() == []

    await env.http.put(f"/__sandbox__/customers/{PHONE}", json={"behaviour": "accept"})
    await env.client.stk_push(PHONE, 10, "INV2", "Deposit", CB)
    await env.receiver.wait_for(2)
    [collection] = (await env.http.get("/__sandbox__/collections")).json()
    assert (collection["phone"], collection["amount_cents"]) == (PHONE, 1000)
    customers = (await env.http.get("/__sandbox__/customers")).json()
    assert customers[0]["balance_cents"] == 12345 - 1000


async def test_faults_accounts_requests_and_reset(env: Env, autojump_clock: MockClock) -> None:
    added = await env.http.post(
        "/__sandbox__/faults", json={"endpoint": "b2c", "kind": "http_500", "count": 2}
    )
    assert added.json() == [
        {"endpoint": "b2c", "kind": "http_500", "remaining": 2, "probability": None}
    ]
    assert (
        await env.http.post("/__sandbox__/faults", json={"endpoint": "nope"})
    ).status_code == 400
    assert (await env.http.delete("/__sandbox__/faults")).json() == []

    accounts = await env.http.put("/__sandbox__/accounts", json={"utility_cents": 500_00})
    assert accounts.json() == {"working_cents": 0, "utility_cents": 500_00}
    await env.client.b2c_payment(
        "w-1", PHONE, 100, "Withdrawal", "http://penpay.test/r", "http://penpay.test/t"
    )
    await trio.sleep(10)
    [payout] = (await env.http.get("/__sandbox__/payouts")).json()
    assert payout["originator_conversation_id"] == "w-1" and payout["amount_cents"] == 100_00
    assert (await env.http.get("/__sandbox__/accounts")).json()["utility_cents"] == 400_00
    assert (await env.http.get("/__sandbox__/requests")).json()["b2c"] == 1

    assert (await env.http.post("/__sandbox__/reset")).json() == {"reset": True}
    assert (await env.http.get("/__sandbox__/payouts")).json() == []
    callbacks = (await env.http.get("/__sandbox__/callbacks")).json()
    assert callbacks == {"delivered": [], "pending": []}
