"""A randomised model-free check of the ledger under concurrency, crashes and faults.

Each rule of :class:`LedgerMachine` runs one *step* in its own ``trio.run``:
a fresh actor system over the same durable journal and transfer store (so
every step begins with a process restart and recovery), a batch of
concurrent operations with injected faults, then the invariants. A step may
instead end in a simulated process crash: everything in flight is cancelled
at a random instant and the next step must recover from what was durable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
import trio
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from penpay.actors.ledger import (
    DEFAULT_CHART,
    AccountSpec,
    Balance,
    Chart,
    GroupResult,
    Ledger,
    LedgerOutcomeUnknown,
    LedgerUnavailable,
    ResultCode,
    Side,
    Transfer,
    TransferKind,
)
from penpay.actors.ledger.account import GetOpenPending, LedgerAccount
from penpay.actors.ledger.model import replay_balances, within_flags
from penpay.actors.ledger.store import TransferStore
from penpay.engine import EngineConfig, Journal, SupervisionPolicy
from penpay.engine.testing import open_test_system, settle
from penpay.money import Currency
from tests.ledger.faults import FlakyJournal, FlakyStore
from tests.ledger.helpers import tid

CUSTOMERS = [f"customer_{i}" for i in range(3)]
CHART: Chart = DEFAULT_CHART.extend(
    AccountSpec(
        code=code,
        name=code,
        currency=Currency.KES,
        normal_side=Side.CREDIT,
        debits_must_not_exceed_credits=True,
    )
    for code in CUSTOMERS
)
KES_ACCOUNTS = [c for c, s in CHART.items() if s.currency is Currency.KES]
USD_ACCOUNTS = [c for c, s in CHART.items() if s.currency is Currency.USD]
CONFIG = EngineConfig(
    passivate_after_s=None,
    ask_timeout_s=30.0,
    supervision=SupervisionPolicy(max_restarts=1_000, window_s=1.0),
)

#: An operation is planned as plain data, then executed against the step's ledger.
Op = tuple[Any, ...]

amounts = st.integers(min_value=1, max_value=5_000)
pair_kes = st.lists(st.sampled_from(KES_ACCOUNTS), min_size=2, max_size=2, unique=True)
pair_usd = st.lists(st.sampled_from(USD_ACCOUNTS), min_size=2, max_size=2, unique=True)
kinds = st.sampled_from([TransferKind.POSTED, TransferKind.PENDING])
leg = st.tuples(st.one_of(pair_kes, pair_usd), amounts, kinds)
op = st.one_of(
    st.tuples(st.just("fund"), st.sampled_from(["kes", "usd"]), st.integers(1, 50_000)),
    st.tuples(st.just("create"), st.lists(leg, min_size=1, max_size=3)),
    st.tuples(st.just("post"), st.integers(0, 1_000), st.none() | st.integers(1, 5_000)),
    st.tuples(st.just("void"), st.integers(0, 1_000)),
    st.tuples(st.just("resubmit"), st.integers(0, 1_000), st.booleans()),
)


class StepBackend(msgspec.Struct):
    """What a step runs against; the PostgreSQL variant opens writers per step."""

    open: Callable[[], AbstractAsyncContextManager[tuple[Journal, TransferStore]]]
    run: Callable[[Callable[[], Awaitable[None]]], None]
    #: Seconds of (mock or real) time per unit of a crash rule's delay.
    crash_tick_s: float


class LedgerMachine(RuleBasedStateMachine):
    backend: StepBackend

    def __init__(self) -> None:
        super().__init__()
        self.counter = 0
        self.seed = 0
        self.stored: list[Transfer] = []
        self.last_live: dict[str, Balance] | None = None
        self.results: list[tuple[list[Transfer], GroupResult]] = []
        self.fail_accounts: dict[str, int] = {}

    # ------------------------------------------------------------- planning

    def _id(self) -> str:
        self.counter += 1
        return tid(f"{id(self)}-{self.counter}")

    def _transfers(self, plan: Op) -> list[Transfer] | tuple[str, str, int | None] | None:
        match plan:
            case ("fund", "kes", amount):
                return [
                    Transfer(
                        id=self._id(),
                        debit_account="mpesa_float",
                        credit_account="owner_equity_kes",
                        amount_cents=amount,
                        currency=Currency.KES,
                        code="fund",
                    )
                ]
            case ("fund", "usd", amount):
                return [
                    Transfer(
                        id=self._id(),
                        debit_account="deriv_float",
                        credit_account="owner_equity_usd",
                        amount_cents=amount,
                        currency=Currency.USD,
                        code="fund",
                    )
                ]
            case ("create", legs):
                return [
                    Transfer(
                        id=self._id(),
                        debit_account=debit,
                        credit_account=credit,
                        amount_cents=amount,
                        currency=CHART[debit].currency,
                        kind=kind,
                        code="random",
                    )
                    for (debit, credit), amount, kind in legs
                ]
            case ("post" | "void", index, *rest):
                pendings = [t for t in self.stored if t.kind is TransferKind.PENDING]
                if not pendings:
                    return None
                amount = rest[0] if rest else None
                return (plan[0], pendings[index % len(pendings)].id, amount)
            case ("resubmit", index, alter):
                if not self.stored:
                    return None
                t = self.stored[index % len(self.stored)]
                t = msgspec.structs.replace(t, timestamp_ms=0, linked_group=None)
                if alter:
                    t = msgspec.structs.replace(t, amount_cents=t.amount_cents + 1)
                return [t]
        raise AssertionError(plan)

    # ------------------------------------------------------------ executing

    async def _execute(self, ledger: Ledger, planned: list[Any]) -> None:
        async def one(item: Any) -> None:
            try:
                if isinstance(item, list):
                    result = await ledger.create_transfers(item)
                    self.results.append((item, result))
                    return
                verb, pending_id, amount = item
                if verb == "post":
                    await ledger.post_pending(self._id(), pending_id, amount_cents=amount)
                else:
                    await ledger.void_pending(self._id(), pending_id)
            except (LedgerUnavailable, LedgerOutcomeUnknown):
                pass  # injected faults; nothing may be half-applied, which the checks verify

        async with trio.open_nursery() as nursery:
            for item in planned:
                nursery.start_soon(one, item)

    def _step(self, plans: list[Op], crash: int | None, faults: list[tuple[str, int]]) -> None:
        planned = [p for p in (self._transfers(plan) for plan in plans) if p is not None]
        self.seed += 1
        seed = self.seed

        async def main() -> None:
            async with self.backend.open() as (inner_journal, inner_store):
                journal = FlakyJournal(inner_journal)
                store = FlakyStore(inner_store)
                async with open_test_system(seed=seed, journal=journal, config=CONFIG) as system:
                    ledger = Ledger(system, store, CHART)
                    await ledger.start()
                    await settle(system)
                    await self._check(ledger, compare_with_last=True)
                    for kind, number in faults:
                        if kind == "account":
                            account = KES_ACCOUNTS[number % len(KES_ACCOUNTS)]
                            journal.fail_next[f"{LedgerAccount.kind}/{account}"] = 1
                        elif kind == "before":
                            store.fail_before.add(number)
                        else:
                            store.fail_after.add(number)
                    if crash is not None:
                        with trio.move_on_after(crash * self.backend.crash_tick_s):
                            await self._execute(ledger, planned)
                        self.last_live = None
                        await self._snapshot_store(store)
                        return  # the system is torn down with work in flight
                    await self._execute(ledger, planned)
                    await settle(system)
                    await ledger.recover()  # holds whose outcome the service could not learn
                    await settle(system)
                    await self._check(ledger, compare_with_last=False)
                    self.last_live = await ledger.balances()

        self.backend.run(main)

    async def _snapshot_store(self, store: TransferStore) -> None:
        rows: list[Transfer] = []
        cursor: int | None = 0
        while cursor is not None:
            page = await store.scan(after_cursor=cursor, limit=500)
            rows.extend(page.transfers)
            cursor = page.next_cursor
        self.stored = rows

    async def _check(self, ledger: Ledger, *, compare_with_last: bool) -> None:
        await self._snapshot_store(ledger.store)
        live = await ledger.balances()
        # Balances rebuilt from the journal (this step's start) equal the last live ones.
        if compare_with_last and self.last_live is not None:
            assert live == self.last_live
        # Σ debits = Σ credits per currency, posted and pending.
        for line in (await ledger.trial_balance()).values():
            assert line.balanced, line
        # No flag is ever violated.
        for code, balance in live.items():
            assert within_flags(CHART[code], balance), (code, balance)
        # The store's rows agree with the balances, and no hold is left behind.
        report = await ledger.reconcile()
        assert report.clean, report
        assert replay_balances(self.stored).keys() <= live.keys()
        # Every pending transfer is open on both its accounts, or resolved exactly once.
        resolutions: dict[str, int] = {}
        for t in self.stored:
            if t.pending_id is not None:
                resolutions[t.pending_id] = resolutions.get(t.pending_id, 0) + 1
        for t in self.stored:
            if t.kind is not TransferKind.PENDING:
                continue
            assert resolutions.get(t.id, 0) <= 1
            for account in (t.debit_account, t.credit_account):
                open_ids = await ledger.system.ref(LedgerAccount, account).ask(GetOpenPending())
                assert (t.id in open_ids) == (t.id not in resolutions), (t, account)
        # What the service answered agrees with the store.
        by_id = {t.id: t for t in self.stored}
        for transfers, result in self.results:
            for t, r in zip(transfers, result.results, strict=True):
                if r.code is ResultCode.OK:
                    assert t.id in by_id, (t, r)
                elif not r.code.value.startswith("exists"):
                    assert t.id not in by_id, (t, r)
        self.results.clear()

    # ---------------------------------------------------------------- rules

    @rule(
        plans=st.lists(op, min_size=1, max_size=8),
        faults=st.lists(
            st.tuples(st.sampled_from(["account", "before", "after"]), st.integers(1, 8)),
            max_size=2,
        ),
    )
    def concurrent_operations(self, plans: list[Op], faults: list[tuple[str, int]]) -> None:
        self._step(plans, crash=None, faults=faults)

    @rule(plans=st.lists(op, min_size=1, max_size=8), delay=st.integers(0, 6))
    def crash_mid_flight(self, plans: list[Op], delay: int) -> None:
        self._step(plans, crash=delay, faults=[])

    @invariant()
    def stored_rows_are_unique_and_resolve_once(self) -> None:
        ids = [t.id for t in self.stored]
        assert len(ids) == len(set(ids))
        resolved = [t.pending_id for t in self.stored if t.pending_id is not None]
        assert len(resolved) == len(set(resolved))
