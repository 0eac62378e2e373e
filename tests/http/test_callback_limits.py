"""Daraja callbacks are not limited per address: M-Pesa sends each one once.

A burst from one Safaricom address answered 429 would be lost before it was
stored; the path token and the source allow-list are what gate callbacks.
"""

from __future__ import annotations

import uuid

import pytest
import trio

from penpay.http.ratelimit import PER_IP
from penpay.sim.determinism import sim_clock
from penpay.sim.router import in_process_client
from penpay.sim.world import SAFARICOM
from tests.sim.scripted import onboarded_world

BURST = PER_IP.burst + 30


async def _burst(route: str) -> None:
    async with onboarded_world() as (world, _user):
        deps = world.services.callbacks
        assert deps is not None
        stored_before = len(deps.store.items)  # type: ignore[attr-defined]
        client = in_process_client(world.router, client=SAFARICOM)
        statuses = []
        for _ in range(BURST):
            token = deps.tokens.issue("deposit", str(uuid.uuid4()))
            answer = await client.post(f"/api/v1/callbacks/{route}/{token}", content=b"{}")
            statuses.append(answer.status_code)
        assert statuses == [200] * BURST
        assert len(deps.store.items) - stored_before == BURST  # type: ignore[attr-defined]


@pytest.mark.parametrize("route", ["stk", "mpesa/stk"])  # handed to Daraja now; API.md's
def test_a_burst_of_callbacks_from_one_address_is_all_stored(route: str) -> None:
    trio.run(_burst, route, clock=sim_clock())
