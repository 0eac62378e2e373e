"""The Ledger service against the in-memory store, under the mock clock."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence

import msgspec
import trio
import trio.testing

from penpay.actors.ledger import Ledger, LedgerAccount, ResultCode, Transfer, TransferKind
from penpay.actors.ledger.account import GetBalance, GetHeldGroups
from penpay.actors.ledger.errors import LedgerUnavailable
from penpay.actors.ledger.store import CommitOutcome
from penpay.engine import EngineConfig, EventRecord, InMemoryJournal, MailboxFull
from penpay.engine.testing import settle
from penpay.storage.transfers_memory import InMemoryTransferStore
from tests.ledger.helpers import fund, open_ledger, tid, transfer

R = ResultCode
PENDING = TransferKind.PENDING


class CountingJournal(InMemoryJournal):
    def __init__(self) -> None:
        super().__init__()
        self.appends: Counter[str] = Counter()

    async def append(
        self, persistence_id: str, expected_sequence: int, events: Sequence[EventRecord]
    ) -> int:
        self.appends[persistence_id] += 1
        return await super().append(persistence_id, expected_sequence, events)


async def test_linked_group_is_all_or_nothing(autojump_clock: trio.abc.Clock) -> None:
    store = InMemoryTransferStore()
    async with open_ledger(store=store) as ledger:
        await fund(ledger, kes_cents=1000)
        result = await ledger.create_transfers(
            [
                transfer("in", "mpesa_float", "customer_in_transit_kes", 500),
                transfer("out", "customer_in_transit_kes", "suspense_kes", 501),
            ]
        )
        assert result.codes == [R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS]
        assert await store.get_transfers([tid("in")]) == {}
        assert (await ledger.balance("customer_in_transit_kes")).credits_posted == 0
        assert (await ledger.reconcile()).clean


async def test_a_group_may_spend_what_an_earlier_transfer_of_it_brings_only_once_posted(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_ledger() as ledger:
        await fund(ledger)
        # Holds count as pending: a credit held in the same group cannot fund a debit.
        result = await ledger.create_transfers(
            [
                transfer("in", "mpesa_float", "customer_in_transit_kes", 500),
                transfer("out", "customer_in_transit_kes", "suspense_kes", 500),
            ]
        )
        assert result.codes == [R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS]


async def test_idempotent_resubmission(autojump_clock: trio.abc.Clock) -> None:
    async with open_ledger() as ledger:
        await fund(ledger)
        t = transfer("t", "mpesa_float", "customer_in_transit_kes", 500)
        assert (await ledger.create_transfers([t])).codes == [R.OK]
        assert (await ledger.create_transfers([t])).codes == [R.EXISTS]
        changed = transfer("t", "mpesa_float", "customer_in_transit_kes", 501)
        assert (await ledger.create_transfers([changed])).codes == [R.EXISTS_WITH_DIFFERENT_AMOUNT]
        fresh = transfer("u", "mpesa_float", "customer_in_transit_kes", 1)
        assert (await ledger.create_transfers([fresh, t])).codes == [
            R.LINKED_EVENT_FAILED,
            R.EXISTS,
        ]
        assert (await ledger.balance("customer_in_transit_kes")).credits_posted == 500


async def test_two_phase_void_and_errors(autojump_clock: trio.abc.Clock) -> None:
    async with open_ledger() as ledger:
        await fund(ledger, kes_cents=1000)
        p = transfer("p", "owner_equity_kes", "mpesa_float", 800, kind=PENDING)
        assert (await ledger.create_transfers([p])).ok
        # The float's 1000 has 800 held: a second hold of 300 is refused.
        q = transfer("q", "owner_equity_kes", "mpesa_float", 300, kind=PENDING)
        assert (await ledger.create_transfers([q])).codes == [R.EXCEEDS_DEBITS]
        assert (await ledger.post_pending(tid("x"), tid("p"), amount_cents=801)).codes == [
            R.EXCEEDS_PENDING_TRANSFER_AMOUNT
        ]
        assert (await ledger.void_pending(tid("v"), tid("p"))).ok
        assert (await ledger.void_pending(tid("v2"), tid("p"))).codes == [
            R.PENDING_TRANSFER_ALREADY_VOIDED
        ]
        assert (await ledger.post_pending(tid("x"), tid("p"))).codes == [
            R.PENDING_TRANSFER_ALREADY_VOIDED
        ]
        assert (await ledger.post_pending(tid("y"), tid("nope"))).codes == [
            R.PENDING_TRANSFER_NOT_FOUND
        ]
        assert (await ledger.create_transfers([q])).ok
        b = await ledger.balance("mpesa_float")
        assert (b.debits_posted, b.credits_pending, b.credits_posted) == (1000, 300, 0)


async def test_concurrent_holds_on_one_account_never_overdraw(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_ledger() as ledger:
        await fund(ledger, kes_cents=10_000)
        codes: list[ResultCode] = []

        async def payout(i: int) -> None:
            t = transfer(f"c{i}", "owner_equity_kes", "mpesa_float", 300, kind=PENDING)
            codes.extend((await ledger.create_transfers([t])).codes)

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(payout, i)
        assert codes.count(R.OK) == 33 and codes.count(R.EXCEEDS_DEBITS) == 17
        report = await ledger.reconcile()
        assert report.clean, report


async def test_hot_account_batches_many_requests_into_few_appends(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = CountingJournal()
    async with open_ledger(journal=journal) as ledger:
        await fund(ledger, kes_cents=10**9)
        before = len(await journal.read_events("ledger-account/mpesa_float"))
        appends_before = journal.appends["ledger-account/mpesa_float"]

        async def deposit(i: int) -> None:
            t = transfer(f"d{i}", "mpesa_float", "customer_in_transit_kes", 100 + i)
            assert (await ledger.create_transfers([t])).ok

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(deposit, i)
        await settle(ledger.system)
        events = (await journal.read_events("ledger-account/mpesa_float"))[before:]
        # 200 reserves in far fewer than 200 appends.
        assert sum(e.type == "ledger.holds_reserved" for e in events) == 200
        assert journal.appends["ledger-account/mpesa_float"] - appends_before <= 10
        # Confirms are journaled lazily, ahead of the account's next reserve.
        await deposit(200)
        events = await journal.read_events("ledger-account/mpesa_float")
        holds = sum(e.type == "ledger.holds_reserved" for e in events)
        confirms = sum(e.type == "ledger.group_confirmed" for e in events)
        assert (holds, confirms) == (202, 201)  # with the funding; only the last is unjournaled


async def test_crash_between_reserve_and_commit_is_resolved_by_recovery(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = InMemoryJournal()
    store = InMemoryTransferStore()
    store.fail_commit = lambda group: "after"  # commit lands, caller is told it failed
    async with open_ledger(journal=journal, store=store) as ledger:
        await fund(ledger, kes_cents=1000)  # committed despite the injected error
        assert (await ledger.balance("mpesa_float")).debits_posted == 1000
        store.fail_commit = lambda group: "before"
        t = transfer("t", "mpesa_float", "customer_in_transit_kes", 5)
        result = None
        try:
            result = await ledger.create_transfers([t])
        except Exception as exc:
            assert type(exc).__name__ == "LedgerUnavailable"
        assert result is None
        store.fail_commit = None
        assert (await ledger.create_transfers([t])).ok
        assert (await ledger.reconcile()).clean
    # Holds left by a caller that vanished are resolved on the next start.
    async with open_ledger(journal=journal, store=store) as ledger:
        ref = ledger.system.ref(LedgerAccount, "suspense_kes")
        from penpay.actors.ledger.account import GetHeldGroups, Leg, Reserve
        from penpay.actors.ledger.chart import Side

        leg = Leg(
            transfer_id=tid("orphan"), kind=TransferKind.POSTED, side=Side.CREDIT, amount_cents=7
        )
        assert await ref.ask(Reserve(tid("orphan-group"), (leg,)))
        assert await ref.ask(GetHeldGroups()) == [tid("orphan-group")]
    async with open_ledger(journal=journal, store=store) as ledger:
        report = await ledger.reconcile()
        assert report.clean, report
        assert await store.resolve_groups([tid("orphan-group")]) == {tid("orphan-group"): False}


async def test_account_transfers_are_paged(autojump_clock: trio.abc.Clock) -> None:
    async with open_ledger() as ledger:
        await fund(ledger)
        for i in range(5):
            t = transfer(f"t{i}", "mpesa_float", "customer_in_transit_kes", 1 + i)
            assert (await ledger.create_transfers([t])).ok
        page = await ledger.account_transfers("customer_in_transit_kes", limit=3)
        assert [t.amount_cents for t in page.transfers] == [1, 2, 3]
        assert page.next_cursor is not None
        page = await ledger.account_transfers(
            "customer_in_transit_kes", after_cursor=page.next_cursor, limit=3
        )
        assert [t.amount_cents for t in page.transfers] == [4, 5]


async def test_posts_applied_without_a_hold_survive_crashes(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = InMemoryJournal()
    store = InMemoryTransferStore()
    payout = transfer("p", "customer_in_transit_kes", "mpesa_float", 300, kind=PENDING)
    async with open_ledger(journal=journal, store=store) as ledger:
        await fund(ledger, kes_cents=1000)
        assert (
            await ledger.create_transfers(
                [transfer("in", "mpesa_float", "customer_in_transit_kes", 500)]
            )
        ).ok
        assert (await ledger.create_transfers([payout])).ok
        # The post lands but its caller is told the commit failed: decided from the store.
        store.fail_commit = lambda group: "after"
        assert (await ledger.post_pending(tid("post"), tid("p"), amount_cents=200)).ok
        store.fail_commit = None
        assert (await ledger.post_pending(tid("again"), tid("p"))).codes == [
            R.PENDING_TRANSFER_ALREADY_POSTED
        ]
        # The applied post (and the confirms before it) are not journaled yet ...
        live = await ledger.balances()
        assert live["mpesa_float"].credits_posted == 200
    # ... yet a restart rebuilds the same balances: holds and open pending
    # transfers are resolved from the store.
    async with open_ledger(journal=journal, store=store, seed=1) as ledger:
        assert await ledger.balances() == live
        assert (await ledger.reconcile()).clean
    # A post committed by a process that died before applying it.
    async with open_ledger(journal=journal, store=store, seed=2) as ledger:
        void = transfer("q", "customer_in_transit_kes", "mpesa_float", 100, kind=PENDING)
        assert (await ledger.create_transfers([void])).ok
        from penpay.actors.ledger.model import resolution_of

        stamped = resolution_of(
            void, transfer_id=tid("v"), void=True, amount_cents=None, code="", transaction_id=None
        )
        stamped = msgspec.structs.replace(stamped, timestamp_ms=1, linked_group=tid("lost-group"))
        assert await store.commit(tid("lost-group"), [stamped]) == "committed"
        assert (await ledger.reconcile()).drift  # the live accounts missed it ...
        assert await ledger.recover() == 2  # ... until recover() applies it on both sides
        await settle(ledger.system)
        assert (await ledger.reconcile()).clean
        assert (await ledger.balances()) == live


class _GatedStore(InMemoryTransferStore):
    """Holds the commit of any group containing ``gated_id`` until ``gate`` is set."""

    def __init__(self, gated_id: str) -> None:
        super().__init__()
        self.gated_id = gated_id
        self.waiting = trio.Event()
        self.gate = trio.Event()

    async def commit(self, group_id: str, transfers: Sequence[Transfer]) -> CommitOutcome:
        if not self.gate.is_set() and any(t.id == self.gated_id for t in transfers):
            self.waiting.set()
            await self.gate.wait()
        return await super().commit(group_id, transfers)


async def test_a_resubmitted_pending_transfer_racing_its_post_changes_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Regression (found by the stateful test on PostgreSQL): resubmitting an open pending
    transfer used to hold it a second time; a post of the original applied meanwhile took
    that hold for the original's unconfirmed creation and applied the pending amount twice."""
    p = transfer("p", "owner_equity_kes", "mpesa_float", 300, kind=PENDING)
    store = _GatedStore(p.id)
    async with open_ledger(store=store) as ledger:
        await fund(ledger, kes_cents=1000)
        store.gate.set()
        assert (await ledger.create_transfers([p])).ok
        store.gate = trio.Event()
        resubmitted: list[ResultCode] = []

        async def resubmit() -> None:
            resubmitted.extend((await ledger.create_transfers([p])).codes)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(resubmit)
            with trio.move_on_after(1):
                await store.waiting.wait()  # held between its reserve and its commit, if held
            assert (await ledger.post_pending(tid("post"), tid("p"))).ok
            await settle(ledger.system)
            store.gate.set()
        assert resubmitted == [R.EXISTS]
        await settle(ledger.system)
        report = await ledger.reconcile()
        assert report.clean, report
        b = await ledger.balance("mpesa_float")
        assert (b.credits_pending, b.credits_posted) == (0, 300)


async def test_a_resubmitted_pending_transfer_held_after_its_post_is_not_taken_for_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Regression: an account restarting (after a failed append) recovered a post from the
    store; a resubmission of the pending transfer, queued meanwhile, was held; the post's
    own late ApplyResolutions then took that hold for the pending transfer's creator,
    reopened it and posted it a second time, in the journal."""
    journal = InMemoryJournal()
    p = transfer("p", "owner_equity_kes", "mpesa_float", 300, kind=PENDING)
    async with open_ledger(journal=journal) as ledger:
        await fund(ledger, kes_cents=1000)
        assert (await ledger.create_transfers([p])).ok
        await settle(ledger.system)
        journal.fail_appends = lambda pid: pid == "ledger-account/mpesa_float"
        with contextlib.suppress(LedgerUnavailable):  # the account crashes, restarts later
            await ledger.create_transfers([transfer("x", "mpesa_float", "suspense_kes", 1)])
        journal.fail_appends = None
        resubmitted: list[ResultCode] = []

        async def resubmit() -> None:
            resubmitted.extend((await ledger.create_transfers([p])).codes)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(resubmit)
            await trio.testing.wait_all_tasks_blocked()  # its reserve waits in the mailbox
            assert (await ledger.post_pending(tid("post"), tid("p"))).ok
        await settle(ledger.system)
        assert resubmitted == [R.EXISTS]
        assert (await ledger.reconcile()).clean
        b = await ledger.balance("mpesa_float")
        assert (b.credits_pending, b.credits_posted) == (0, 300)
    async with open_ledger(journal=journal, store=ledger.store, seed=1) as replayed:
        b = await replayed.balance("mpesa_float")
        assert (b.credits_pending, b.credits_posted) == (0, 300)  # and so says the journal


class _CancellingStore(InMemoryTransferStore):
    """Commits, then leaves the account's mailbox full and cancels the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.armed: tuple[Ledger, trio.CancelScope] | None = None

    async def commit(self, group_id: str, transfers: Sequence[Transfer]) -> CommitOutcome:
        outcome = await super().commit(group_id, transfers)
        if self.armed is not None:
            ledger, caller = self.armed
            account = ledger.system.ref(LedgerAccount, "mpesa_float")
            with contextlib.suppress(MailboxFull):
                while True:
                    account.tell_nowait(GetBalance())
            caller.cancel()
        return outcome


async def test_a_caller_cancelled_after_the_commit_still_confirms_every_account(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The store has decided: a confirm left unsent would keep the group held on a hot
    account, which is never idle long enough to be re-activated and resolve it."""
    store = _CancellingStore()
    async with open_ledger(store=store, config=EngineConfig(mailbox_capacity=4)) as ledger:
        await fund(ledger, kes_cents=1000)
        with trio.CancelScope() as caller:
            store.armed = (ledger, caller)
            await ledger.create_transfers([transfer("t", "mpesa_float", "suspense_kes", 100)])
        store.armed = None
        await settle(ledger.system)
        assert await ledger.system.ref(LedgerAccount, "mpesa_float").ask(GetHeldGroups()) == []
        assert (await ledger.balance("mpesa_float")).debits_posted == 1000 + 100
