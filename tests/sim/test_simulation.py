"""The deterministic simulation: replayable, its faults survivable, its checker able to fail."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from penpay.actors import deposit
from penpay.actors.ledger_port import LedgerAdapter
from penpay.actors.saga import Posting, Status, StkCallback, StkQueryResult
from penpay.actors.transaction import DepositActor
from penpay.sim import ALL, Fault, run_simulation
from penpay.sim.determinism import seed_trio_scheduler


def _schedule_trace(seed: int) -> list[int]:
    order: list[int] = []

    async def worker(n: int) -> None:
        for _ in range(5):
            order.append(n)
            await trio.lowlevel.checkpoint()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for n in range(8):
                nursery.start_soon(worker, n)

    seed_trio_scheduler(seed)
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return order


def test_trio_private_scheduler_hooks_still_make_runs_repeatable() -> None:
    """Covers trio._core._run._r and _ALLOW_DETERMINISTIC_SCHEDULING (private API)."""
    assert _schedule_trace(5) == _schedule_trace(5)
    assert len({tuple(_schedule_trace(seed)) for seed in range(6)}) > 1


def test_the_same_seed_gives_the_same_trace_hash_and_another_seed_does_not() -> None:
    first = run_simulation(11, 30, ALL)
    again = run_simulation(11, 30, ALL)
    other = run_simulation(12, 30, ALL)
    assert first.trace_hash == again.trace_hash
    assert first.trace_lines == again.trace_lines
    assert first.trace_hash != other.trace_hash


@pytest.mark.parametrize(
    ("fault", "seed"),
    [(Fault.SYSTEM_CRASH, 1), (Fault.DERIV_DROP, 1), (Fault.CALLBACKS, 1),
     (Fault.STORAGE, 1), (Fault.CLOCK, 1), (Fault.ACTOR_CRASH, 2)],
)
def test_each_fault_kind_alone_keeps_every_invariant(fault: Fault, seed: int) -> None:
    result = run_simulation(seed, 40, {fault})
    assert result.ok, "\n".join(map(str, result.violations)) + "\n" + result.replay_command()
    assert result.statuses


def test_daraja_errors_keep_every_invariant() -> None:
    result = run_simulation(2, 40, {Fault.DARAJA_ERROR})
    assert result.ok, "\n".join(map(str, result.violations))


@pytest.mark.parametrize("seed", range(1, 21))
def test_many_seeds_with_every_fault_together(seed: int) -> None:
    result = run_simulation(seed, 500)  # all fault kinds, strict: no tolerated findings
    assert result.ok, "\n".join(map(str, result.violations)) + "\n" + result.replay_command()


def test_a_run_without_faults_completes_most_deposits() -> None:
    result = run_simulation(3, 50, ())
    assert result.ok and not result.findings
    assert result.statuses.get("COMPLETED", 0) > 25


def test_the_checker_catches_a_dropped_posting_and_names_the_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deliberate bug: the ledger adapter silently drops every M-Pesa collection."""
    post = LedgerAdapter.post

    async def dropping(self: LedgerAdapter, transaction_id: str, posting: Posting) -> None:
        if posting.name == "mpesa_collected":
            return
        await post(self, transaction_id, posting)

    monkeypatch.setattr(LedgerAdapter, "post", dropping)
    result = run_simulation(7, 30, ())
    names = {v.name for v in result.violations}
    # Caught twice over: the float no longer matches M-Pesa, or the ledger's own
    # flags refuse the conversion that follows, and the transaction crashes on it
    # again and again (parked, or still restarting when the faults have stopped).
    assert names & {"mpesa_float_drift", "actor_parked", "never_settled"}, names
    assert all(str(v).startswith("[seed 7, step ") for v in result.violations)
    assert "--seed 7" in result.replay_command()


def test_dropping_the_idempotency_check_on_callbacks_fails_within_20_seeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The experiment of issue #7: a deposit that forgets it was already paid.

    The mutant answers a paid STK callback (and the STK Query it leads to) as
    if the deposit still waited for M-Pesa, whatever its status: a duplicate
    or late callback then credits Deriv again. The simulation's workload
    sends duplicate and late callbacks, so some seed among the first 20 must
    catch it, name itself, and say how to replay it.
    """
    settle = deposit._decide_stk_callback
    query = deposit._decide_stk_query

    def forgetful(state: deposit.DepositState) -> deposit.DepositState:
        if state.status in (Status.AWAITING_DERIV_CONFIRMATION, Status.COMPLETED):
            waiting = Status.AWAITING_MPESA_CALLBACK
            return msgspec.structs.replace(state, status=waiting, paid_claimed=False)
        return state

    def decide(state: Any, event: Any, now_ms: int, timings: Any) -> list[Any]:
        if state.status in (Status.AWAITING_DERIV_CONFIRMATION, Status.COMPLETED):
            if isinstance(event, StkCallback) and event.result_code == "0":
                return settle(forgetful(state), event, now_ms)
            if isinstance(event, StkQueryResult) and state.paid_claimed:
                return query(forgetful(state), event, now_ms, timings)
        return original(state, event, now_ms, timings)

    original = deposit.decide
    monkeypatch.setattr(DepositActor, "flow", dataclasses.replace(DepositActor.flow, decide=decide))
    caught = None
    for seed in range(1, 21):
        result = run_simulation(seed, 200)
        if not result.ok:
            caught = result
            break
    assert caught is not None, "the mutant survived 20 seeds"
    names = {v.name for v in caught.violations}
    assert names & {"double_deriv_credit", "double_deriv_transfer", "deriv_float_drift"}, names
    assert f"--seed {caught.seed}" in caught.replay_command()


def test_the_checker_sees_a_cent_left_in_transit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trial balance cannot fail and the floats see only the providers' side: a
    conversion one cent short leaves the cent in transit, which only the per-
    transaction books show."""
    post = LedgerAdapter.post

    async def short(self: LedgerAdapter, transaction_id: str, posting: Posting) -> None:
        if posting.name == "fx_conversion":
            first, *rest = posting.legs
            posting = msgspec.structs.replace(posting, legs=(
                msgspec.structs.replace(first, amount_cents=first.amount_cents - 1), *rest))
        await post(self, transaction_id, posting)

    monkeypatch.setattr(LedgerAdapter, "post", short)
    result = run_simulation(3, 50, ())
    assert "money_left_in_transit" in {v.name for v in result.violations}, result.violations


def test_the_checker_sees_postings_booked_only_when_it_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading a transaction wakes its actor, whose recovery re-issues its postings:
    one the run never made was booked by the checker's own reads, and hidden."""
    post = LedgerAdapter.post
    skipped: set[str] = set()

    async def forgetful(self: LedgerAdapter, transaction_id: str, posting: Posting) -> None:
        if posting.name == "deriv_float_released" and transaction_id not in skipped:
            skipped.add(transaction_id)  # the first time only: recovery books it
            return
        await post(self, transaction_id, posting)

    monkeypatch.setattr(LedgerAdapter, "post", forgetful)
    result = run_simulation(3, 50, ())
    assert "booked_only_on_reload" in {v.name for v in result.violations}, result.violations
