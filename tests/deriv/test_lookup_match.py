"""A statement row settles a lost money call only if it is that call's row.

The reference alone proves nothing: a withdrawal's note is the client's own
free text, so any Deriv client can send the agent USD 10 described as another
user's USD 300 withdrawal. The row must also carry the amount, the direction
and the user's loginid.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from trio.testing import MockClock

from penpay.actors.deriv_actor import DerivGatewayActor
from penpay.actors.saga import Command, DerivLookup, FindDerivTransfer, FindDerivWithdrawal
from penpay.engine import ActorSystem, Clock
from penpay.sandbox.deriv import DerivWorld

from .conftest import AGENT, JANE, JOHN, Rig

WITHDRAWAL = "PenPay withdrawal 0193a000-0000-7000-8000-0000000000aa"
DEPOSIT = "PenPay deposit 0193a000-0000-7000-8000-0000000000bb attempt 1"


async def _lookup(rig: Rig, command: Command) -> DerivLookup:
    async def no_token(user_id: str) -> str | None:
        return None

    actor = DerivGatewayActor(rig.gateway, AGENT, no_token)
    actor.system = cast(ActorSystem, SimpleNamespace(clock=Clock(rig.world.now())))
    answer = await actor.call(command, "user")
    assert isinstance(answer, DerivLookup), answer
    return answer


def _withdraw(world: DerivWorld, login: str, email: str, cents: int, description: str) -> int:
    """The withdrawal's row id on the agent's statement (the credit leg)."""
    code = world.issue_code(email, "paymentagent_withdraw")
    assert code is not None
    world.paymentagent_withdraw(
        login, paymentagent_loginid=AGENT, amount_cents=cents, currency="USD",
        verification_code=code, description=description, dry_run=False,
    )
    return world.account(AGENT).statement[-1].transaction_id


def _transfer(world: DerivWorld, login: str, cents: int, description: str) -> int:
    world.paymentagent_transfer(
        AGENT, transfer_to=login, amount_cents=cents, currency="USD", dry_run=False,
        description=description,
    )
    return world.moves[-1].transaction_id


async def test_another_clients_withdrawal_with_our_note_is_not_ours(
    autojump_clock: MockClock, rig: Rig
) -> None:
    """Regression: Jane's USD 10 was taken for John's lost USD 300 withdrawal."""
    _withdraw(rig.world, JANE, "jane@example.com", 1_000, WITHDRAWAL)
    answer = await _lookup(rig, FindDerivWithdrawal(WITHDRAWAL, 30_000, JOHN))
    assert answer.deriv_transaction_id is None
    assert answer.conflict is not None and JANE in answer.conflict


async def test_the_users_own_withdrawal_is_found_behind_a_spoof(
    autojump_clock: MockClock, rig: Rig
) -> None:
    ours = _withdraw(rig.world, JANE, "jane@example.com", 30_000, WITHDRAWAL)
    _transfer(rig.world, JOHN, 1_000, "funds for John")
    _withdraw(rig.world, JOHN, "john@example.com", 1_000, WITHDRAWAL)  # newer: read first
    answer = await _lookup(rig, FindDerivWithdrawal(WITHDRAWAL, 30_000, JANE))
    assert answer == DerivLookup(WITHDRAWAL, ours)


async def test_a_withdrawal_of_another_amount_is_not_ours(
    autojump_clock: MockClock, rig: Rig
) -> None:
    _withdraw(rig.world, JANE, "jane@example.com", 1_000, WITHDRAWAL)
    answer = await _lookup(rig, FindDerivWithdrawal(WITHDRAWAL, 30_000, JANE))
    assert answer.deriv_transaction_id is None and answer.conflict is not None


async def test_a_transfer_to_another_client_or_of_another_amount_is_not_ours(
    autojump_clock: MockClock, rig: Rig
) -> None:
    _transfer(rig.world, JOHN, 2_500, DEPOSIT)
    to_jane = await _lookup(rig, FindDerivTransfer(DEPOSIT, 2_500, JANE))
    assert to_jane.deriv_transaction_id is None and to_jane.conflict is not None
    more = await _lookup(rig, FindDerivTransfer(DEPOSIT, 3_000, JOHN))
    assert more.deriv_transaction_id is None and more.conflict is not None


async def test_the_exact_transfer_is_found_and_nothing_is_absent(
    autojump_clock: MockClock, rig: Rig
) -> None:
    tid = _transfer(rig.world, JANE, 2_500, DEPOSIT)
    assert await _lookup(rig, FindDerivTransfer(DEPOSIT, 2_500, JANE)) == DerivLookup(DEPOSIT, tid)
    other = DEPOSIT.replace("attempt 1", "attempt 2")
    assert await _lookup(rig, FindDerivTransfer(other, 2_500, JANE)) == DerivLookup(other, None)
