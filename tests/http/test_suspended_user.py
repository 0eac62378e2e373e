"""A suspended user's unexpired access token moves no money and re-links nothing."""

from __future__ import annotations

import random
import uuid

import trio

from penpay.sim.determinism import sim_clock
from penpay.sim.workload import Client, Stats
from penpay.sim.world import OPERATOR_EMAIL, OPERATOR_PASSWORD
from tests.sim.scripted import onboarded_world


async def _scenario() -> None:
    async with onboarded_world() as (world, user):
        operator = Client(world.router, "10.255.255.2", "operator", world.trace, Stats())
        assert await operator.login(OPERATOR_EMAIL, OPERATOR_PASSWORD, random.Random(0))
        me = await user.client.call("GET", "/me", "me", headers=user.client.headers)
        suspended = await operator.call(
            "PUT", f"/admin/users/{me.json()['user_id']}/status", "suspend",
            headers=operator.headers, json={"status": "suspended"},
        )
        assert suspended.status_code == 200, suspended.text

        relink = await user.client.call(
            "PUT", "/me/deriv-account", "link", headers=user.client.headers,
            json={"deriv_login_id": user.login_id, "token": user.token},
        )
        assert (relink.status_code, relink.json()["code"]) == (403, "account_inactive")
        deposit = await user.client.call(
            "POST", "/deposits", "deposit",
            headers={**user.client.headers, "Idempotency-Key": uuid.uuid4().hex},
            json={"amount_cents": 1_000, "currency": "USD"},
        )
        assert (deposit.status_code, deposit.json()["code"]) == (403, "account_inactive")


def test_a_suspended_user_can_neither_link_nor_pay() -> None:
    trio.run(_scenario, clock=sim_clock())
