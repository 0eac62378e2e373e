"""PenPay's per-transaction limits narrowed to the payment agent's own terms."""

from __future__ import annotations

import logging
import random
from types import SimpleNamespace
from typing import cast

import pytest
import trio
from trio.testing import MockClock

from penpay.actors.agent_terms import keep_to_agent_terms
from penpay.actors.deriv import DerivGateway
from penpay.actors.fx import TransactionType
from penpay.actors.payments import Payments
from penpay.actors.policy import Limits
from penpay.sandbox.deriv import DerivWorld, InProcessDerivSandbox
from penpay.sandbox.deriv.state import PaymentAgentTerms

from .conftest import AGENT, AGENT_TOKEN


def test_limits_within_keep_the_narrower_bound_of_each() -> None:
    own = Limits(deposit_min_usd_cents=200, deposit_max_usd_cents=100_000,
                 withdrawal_min_usd_cents=500, withdrawal_max_usd_cents=300_000)
    narrowed = own.within(1_000, 200_000)
    assert narrowed.bounds(TransactionType.DEPOSIT) == (1_000, 100_000)
    assert narrowed.bounds(TransactionType.WITHDRAWAL) == (1_000, 200_000)
    assert narrowed.daily_cap_usd_cents == own.daily_cap_usd_cents
    assert own.within(100, 10**9) == own


async def _narrowed(world: DerivWorld, token: str) -> Limits:
    payments = SimpleNamespace(limits=Limits())
    async with trio.open_nursery() as nursery:
        sandbox = InProcessDerivSandbox(world)
        await nursery.start(sandbox.run)
        gateway = DerivGateway(sandbox.connect, token, rng=random.Random(1))
        await nursery.start(gateway.run)
        with trio.fail_after(30):
            await keep_to_agent_terms(gateway, cast(Payments, payments))
        nursery.cancel_scope.cancel()
    return cast(Limits, payments.limits)


@pytest.mark.parametrize(
    ("terms", "deposit", "withdrawal"),
    [
        (PaymentAgentTerms(name="A"), (1_000, 100_000), (1_000, 100_000)),  # Deriv's default
        (PaymentAgentTerms(name="A", min_cents=100, max_cents=50_000), (200, 50_000),
         (500, 50_000)),
    ],
)
async def test_the_agents_terms_narrow_penpays_limits(
    autojump_clock: MockClock, world: DerivWorld, terms: PaymentAgentTerms,
    deposit: tuple[int, int], withdrawal: tuple[int, int],
) -> None:
    """A USD 5 deposit under an agent minimum of USD 10 would be collected by
    M-Pesa, refused by Deriv and refunded: it is refused at once instead."""
    world.account(AGENT).payment_agent = terms
    limits = await _narrowed(world, AGENT_TOKEN)
    assert limits.bounds(TransactionType.DEPOSIT) == deposit
    assert limits.bounds(TransactionType.WITHDRAWAL) == withdrawal


async def test_without_the_admin_scope_the_limits_stand_and_the_operator_is_told(
    autojump_clock: MockClock, world: DerivWorld, caplog: pytest.LogCaptureFixture
) -> None:
    world.add_token("payments-only", AGENT, ["read", "payments"])
    with caplog.at_level(logging.WARNING, logger="penpay.actors.agent_terms"):
        assert await _narrowed(world, "payments-only") == Limits()
    assert "admin scope" in caplog.text
