"""The Deriv gateway actor settles unknown transfers from a busy agent's statement.

A transfer that never happened can only be declared absent once the lookup
has read every row it could be in. On an agent with thousands of older rows,
reading from the transaction's creation on (less a clock margin) is what
makes that possible at all.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
from trio.testing import MockClock

from penpay.actors.deriv_actor import STATEMENT_CLOCK_MARGIN_S, DerivGatewayActor
from penpay.actors.saga import DerivLookup, FindDerivTransfer, Input
from penpay.engine import ActorSystem, Clock
from penpay.sandbox.deriv import DerivWorld, PaymentAgentTerms

from .conftest import AGENT, AGENT_TOKEN, JANE, JANE_TOKEN, Rig

OLD_ROWS = 2_100  # more than the lookup's 20 pages of 100
AMOUNT = 2_500  # every transfer these tests look for


class WallClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def busy_agent(clock: WallClock) -> DerivWorld:
    world = DerivWorld(rng=random.Random(3), wall_clock=clock)
    world.create_account(
        AGENT, email="agent@penpay.test", fullname="PenPay Agent", balance_cents=10**9,
        payment_agent=PaymentAgentTerms(name="PenPay Agent", daily_count_max=10 * OLD_ROWS),
        tokens={AGENT_TOKEN: ["read", "payments", "admin"]},
    )
    world.create_account(
        JANE, email="jane@example.com", fullname="Jane Wanjiru", balance_cents=0,
        tokens={JANE_TOKEN: ["read", "payments"]},
    )
    for n in range(OLD_ROWS):
        world.paymentagent_transfer(
            AGENT, transfer_to=JANE, amount_cents=1_000, currency="USD", dry_run=False,
            description=f"PenPay deposit old-{n} attempt 1",
        )
    return world


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def world(clock: WallClock) -> DerivWorld:
    """Overrides conftest's world: the rig's gateway connects to this busy agent."""
    return busy_agent(clock)


def transfer(world: DerivWorld, description: str) -> int:
    world.paymentagent_transfer(
        AGENT, transfer_to=JANE, amount_cents=AMOUNT, currency="USD", dry_run=False,
        description=description,
    )
    return world.moves[-1].transaction_id


async def lookups(
    rig: Rig, commands: list[FindDerivTransfer], *, ours_ahead: timedelta = timedelta(0)
) -> list[Input | None]:
    """Run ``commands`` through the actor, with PenPay's clock ``ours_ahead`` of Deriv's."""

    async def no_token(user_id: str) -> str | None:
        return None

    actor = DerivGatewayActor(rig.gateway, AGENT, no_token)
    actor.system = cast(ActorSystem, SimpleNamespace(clock=Clock(rig.world.now() + ours_ahead)))
    return [await actor.call(command, "user") for command in commands]


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def test_an_absent_transfer_is_declared_absent_past_thousands_of_older_rows(
    autojump_clock: MockClock, rig: Rig, clock: WallClock
) -> None:
    clock.now += timedelta(days=1)
    created = clock.now
    clock.now += timedelta(minutes=3)
    found_id = transfer(rig.world, "PenPay deposit found attempt 1")

    absent, found, unbounded = await lookups(rig, [
        FindDerivTransfer("PenPay deposit lost attempt 1", AMOUNT, JANE, ms(created)),
        FindDerivTransfer("PenPay deposit found attempt 1", AMOUNT, JANE, ms(created)),
        FindDerivTransfer("PenPay deposit lost attempt 1", AMOUNT, JANE),
    ])

    assert absent == DerivLookup("PenPay deposit lost attempt 1", None)
    assert found == DerivLookup("PenPay deposit found attempt 1", found_id)
    # Without a starting point the lookup gives up at its page limit: no verdict.
    assert unbounded is None


async def test_the_clock_margin_covers_our_clock_stepped_back_since_the_creation(
    autojump_clock: MockClock, rig: Rig, clock: WallClock
) -> None:
    """Our clock ran ahead when the transaction was created, and NTP has fixed it since."""
    clock.now += timedelta(days=1)
    early_id = transfer(rig.world, "PenPay deposit early attempt 1")
    ours = clock.now + timedelta(seconds=STATEMENT_CLOCK_MARGIN_S - 60)

    (answer,) = await lookups(rig, [
        FindDerivTransfer("PenPay deposit early attempt 1", AMOUNT, JANE, ms(ours)),
    ])

    assert answer == DerivLookup("PenPay deposit early attempt 1", early_id)


@pytest.mark.parametrize("ours_ahead", [timedelta(days=300), timedelta(days=-300)])
async def test_clocks_months_apart_change_no_verdict(
    autojump_clock: MockClock, rig: Rig, clock: WallClock, ours_ahead: timedelta
) -> None:
    """The window is moved onto Deriv's clock (``time``), whatever ours says."""
    clock.now += timedelta(days=1)
    created = clock.now + ours_ahead  # what our clock read at the creation
    clock.now += timedelta(minutes=3)
    found_id = transfer(rig.world, "PenPay deposit found attempt 1")

    absent, found = await lookups(rig, [
        FindDerivTransfer("PenPay deposit lost attempt 1", AMOUNT, JANE, ms(created)),
        FindDerivTransfer("PenPay deposit found attempt 1", AMOUNT, JANE, ms(created)),
    ], ours_ahead=ours_ahead)

    assert absent == DerivLookup("PenPay deposit lost attempt 1", None)
    assert found == DerivLookup("PenPay deposit found attempt 1", found_id)


async def test_a_second_lookup_for_the_same_reference_waits_for_the_first(
    autojump_clock: MockClock, rig: Rig, clock: WallClock
) -> None:
    """Lookups asked at every deadline must not pile up behind a slow one."""
    clock.now += timedelta(days=1)
    calls = 0
    statement = rig.gateway.statement

    async def counted(**kwargs: Any) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        return await statement(**kwargs)

    rig.gateway.statement = counted  # type: ignore[method-assign]

    async def no_token(user_id: str) -> str | None:
        return None

    actor = DerivGatewayActor(rig.gateway, AGENT, no_token)
    actor.system = cast(ActorSystem, SimpleNamespace(clock=Clock(rig.world.now())))
    lookup = FindDerivTransfer("PenPay deposit lost attempt 1", AMOUNT, JANE, ms(clock.now))
    answers: list[Input | None] = []

    async def ask() -> None:
        answers.append(await actor.call(lookup, "user"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        nursery.start_soon(ask)
    assert sorted(answers, key=repr) == [
        DerivLookup("PenPay deposit lost attempt 1", None), None
    ]
    assert calls == 1  # one page: nothing in the window
