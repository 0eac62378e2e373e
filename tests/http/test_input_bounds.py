"""Malformed numbers and ids in query strings and paths are 4xx answers, never 500.

``str.isdigit()`` let through digits ``int()`` refuses ("²", "¹") and numbers
longer than ``int()`` converts (4300 digits); a transaction id that is not a
UUID reached ``uuid.UUID()`` unguarded. Each of these answered 500
``internal_error``.
"""

from __future__ import annotations

import base64
import random
import uuid
from typing import Any

import httpx
import trio

from penpay.sim.chaos import Chaos
from penpay.sim.determinism import sim_clock
from penpay.sim.trace import Trace
from penpay.sim.workload import Operator, Stats, User
from penpay.sim.world import OPERATOR_EMAIL, OPERATOR_PASSWORD, SimWorld

HUGE = "9" * 5000
#: A digit ``int(x, 16)`` accepts, so ``uuid.UUID`` made an id of 32 of them.
FULLWIDTH_ONE = "\uff11"
NAIVE_CURSOR = base64.urlsafe_b64encode(f"2024-01-01T00:00:00|{uuid.uuid4()}".encode()).decode()

#: (who asks, path, the field named in the 422) for each bad integer or cursor.
BAD_QUERIES = [
    ("user", "/quotes?type=deposit&amount_cents=%C2%B2&currency=USD", "amount_cents"),
    ("user", f"/quotes?type=deposit&amount_cents={HUGE}&currency=USD", "amount_cents"),
    ("user", "/quotes?type=deposit&amount_cents=%EF%BC%95&currency=USD", "amount_cents"),
    ("user", "/transactions?limit=%C2%B9", "limit"),
    ("user", f"/transactions?limit={HUGE}", "limit"),
    ("user", f"/transactions?cursor={NAIVE_CURSOR}", "cursor"),
    ("operator", "/admin/transactions?limit=%C2%B9", "limit"),
    ("operator", f"/admin/transactions?cursor={NAIVE_CURSOR}", "cursor"),
    ("operator", "/admin/actors?limit=%C2%B2", "limit"),
    ("operator", f"/admin/actors?limit={HUGE}", "limit"),
    ("operator", "/admin/ledger/transfers?account=deriv_float&cursor=%C2%B2", "cursor"),
    ("operator", f"/admin/ledger/transfers?account=deriv_float&cursor={HUGE}", "cursor"),
    ("operator", "/admin/audit?cursor=%C2%B3", "cursor"),
    ("operator", f"/admin/audit?limit={HUGE}", "limit"),
]

#: (who asks, method, path) naming a transaction by something that is not its id.
BAD_IDS = [
    ("user", "GET", "/transactions/not-a-uuid"),
    ("operator", "POST", "/admin/transactions/not-a-uuid/resolve"),
    ("operator", "POST", "/admin/transactions/" + FULLWIDTH_ONE * 32 + "/resolve"),
]


async def _ask(requests: list[tuple[str, str, str]]) -> list[httpx.Response]:
    """Send ``(who, method, path)`` requests as an active user or the operator.

    The user has made a deposit first, so lists have a row to compare a cursor with.
    """
    world = SimWorld(1, Trace(), Chaos(random.Random(0)))
    stats = Stats()
    answers: list[httpx.Response] = []
    async with trio.open_nursery() as root:
        await world.start(root)
        user = User(1, world, Operator(world.router, world.trace, stats, 1), stats, 1)
        assert await user.onboard()
        deposit = await user._authed(
            "POST", "/deposits", "deposit", headers={"Idempotency-Key": "input-bounds-1"},
            json={"amount_cents": 1000, "currency": "USD"},
        )
        assert deposit.status_code == 202, deposit.text
        operator = Operator(world.router, world.trace, stats, 2).client
        assert await operator.login(OPERATOR_EMAIL, OPERATOR_PASSWORD, random.Random(0))
        body: dict[str, Any] = {"json": {"action": "fail", "note": "a typo in the id"}}
        for who, method, path in requests:
            extra = body if method == "POST" else {}
            if who == "user":
                answers.append(await user._authed(method, path, path, **extra))
            else:
                answers.append(
                    await operator.call(method, path, path, headers=operator.headers, **extra)
                )
        await world.stop()
        root.cancel_scope.cancel()
    return answers


def test_bad_integers_are_422_naming_the_field() -> None:
    good = [("user", "GET", "/quotes?type=deposit&amount_cents=1000&currency=USD"),
            ("user", "GET", "/transactions?limit=100")]
    bad = [(who, "GET", path) for who, path, _ in BAD_QUERIES]
    answers = trio.run(_ask, good + bad, clock=sim_clock())
    assert [a.status_code for a in answers[: len(good)]] == [200, 200], answers[0].text
    for (_, path, field), answer in zip(BAD_QUERIES, answers[len(good):], strict=True):
        assert answer.status_code == 422, (path[:80], answer.text)
        problem = answer.json()
        assert problem["code"] == "validation_failed", problem
        assert [e["field"] for e in problem["errors"]] == [field], problem


def test_malformed_transaction_ids_are_404() -> None:
    answers = trio.run(_ask, BAD_IDS, clock=sim_clock())
    for (_, _, path), answer in zip(BAD_IDS, answers, strict=True):
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["code"] == "not_found", answer.json()
