"""The Deriv gateway actor settles unknown transfers from a busy agent's statement.

A transfer that never happened can only be declared absent once the lookup
has read every row it could be in. On an agent with thousands of older rows,
reading from the transaction's creation on (less a clock margin) is what
makes that possible at all.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import trio
from trio.testing import MockClock

from penpay.actors.deriv import DerivGateway
from penpay.actors.deriv_actor import STATEMENT_CLOCK_MARGIN_S, DerivGatewayActor
from penpay.actors.saga import DerivLookup, FindDerivTransfer
from penpay.sandbox.deriv import DerivWorld, InProcessDerivSandbox, PaymentAgentTerms

from .conftest import AGENT, AGENT_TOKEN, FAST, JANE, JANE_TOKEN

OLD_ROWS = 2_100  # more than the lookup's 20 pages of 100


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


async def lookups(
    world: DerivWorld, clock: WallClock, commands: list[FindDerivTransfer]
) -> list[DerivLookup | None]:
    async with trio.open_nursery() as nursery:
        sandbox = InProcessDerivSandbox(world)
        await nursery.start(sandbox.run)
        gateway = DerivGateway(sandbox.connect, AGENT_TOKEN, rng=random.Random(1), config=FAST)
        await nursery.start(gateway.run)
        await gateway.wait_connected()

        async def no_token(user_id: str) -> str | None:
            return None

        actor = DerivGatewayActor(gateway, AGENT, no_token)
        answers = []
        for command in commands:
            answer = await actor.call(command, "user")
            assert answer is None or isinstance(answer, DerivLookup)
            answers.append(answer)
        nursery.cancel_scope.cancel()
    return answers


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def test_an_absent_transfer_is_declared_absent_past_thousands_of_older_rows(
    autojump_clock: MockClock,
) -> None:
    clock = WallClock()
    world = busy_agent(clock)
    clock.now += timedelta(days=1)
    created = clock.now
    clock.now += timedelta(minutes=3)
    world.paymentagent_transfer(
        AGENT, transfer_to=JANE, amount_cents=2_500, currency="USD", dry_run=False,
        description="PenPay deposit found attempt 1",
    )
    found_id = world.moves[-1].transaction_id

    absent, found, unbounded = await lookups(world, clock, [
        FindDerivTransfer("PenPay deposit lost attempt 1", ms(created)),
        FindDerivTransfer("PenPay deposit found attempt 1", ms(created)),
        FindDerivTransfer("PenPay deposit lost attempt 1"),
    ])

    assert absent == DerivLookup("PenPay deposit lost attempt 1", None)
    assert found == DerivLookup("PenPay deposit found attempt 1", found_id)
    # Without a starting point the lookup gives up at its page limit: no verdict.
    assert unbounded is None


async def test_the_clock_margin_finds_a_transfer_stamped_before_our_creation_time(
    autojump_clock: MockClock,
) -> None:
    """Deriv's clock may run behind ours: its row can carry an earlier time."""
    clock = WallClock()
    world = busy_agent(clock)
    clock.now += timedelta(days=1)
    world.paymentagent_transfer(
        AGENT, transfer_to=JANE, amount_cents=2_500, currency="USD", dry_run=False,
        description="PenPay deposit early attempt 1",
    )
    ours = clock.now + timedelta(seconds=STATEMENT_CLOCK_MARGIN_S - 60)

    (answer,) = await lookups(world, clock, [
        FindDerivTransfer("PenPay deposit early attempt 1", ms(ours)),
    ])

    assert answer == DerivLookup("PenPay deposit early attempt 1", world.moves[-1].transaction_id)
