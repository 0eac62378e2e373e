"""A caller cancelled while its group is being applied: the group still runs to its end.

A caller cancelled between its holds and the store's verdict (a client that
hung up on the capital route, a timeout around a posting) left every hold
reserved, counting against the accounts' flags, or a committed group that the
account actors never applied; only a restart cleaned them up.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from penpay.actors.ledger import LedgerAccount, ResultCode, Transfer
from penpay.actors.ledger.account import GetHeldGroups
from penpay.actors.ledger.errors import LedgerOutcomeUnknown, TransferStoreUnavailable
from penpay.actors.ledger.store import CommitOutcome
from penpay.engine import EngineConfig
from penpay.engine.testing import settle
from penpay.storage.transfers_memory import InMemoryTransferStore
from tests.ledger.helpers import fund, open_ledger, tid, transfer


async def test_a_caller_cancelled_during_the_commit_leaves_no_hold(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = InMemoryTransferStore(latency_s=0.01)
    async with open_ledger(store=store) as ledger:
        await fund(ledger, kes_cents=1000)
        await settle(ledger.system)
        # The caller (a transaction actor, an HTTP request) is cancelled while the
        # commit is on its way: e.g. a timeout around the posting.
        with trio.move_on_after(0.005):
            await ledger.create_transfers(
                [transfer("t", "suspense_kes", "mpesa_float", 1000)]  # a payout
            )
        await settle(ledger.system)
        # The group went through although its caller left; no hold is left behind.
        assert store.all_transfers()[-1].id == tid("t")
        held = await ledger.system.ref(LedgerAccount, "mpesa_float").ask(GetHeldGroups())
        assert held == []
        assert (await ledger.reconcile()).clean


class _SlowAckStore(InMemoryTransferStore):
    """Commits at once, answers late (a slow acknowledgement from the database)."""

    async def commit(self, group_id: str, transfers: Sequence[Transfer]) -> CommitOutcome:
        outcome = await super().commit(group_id, transfers)
        await trio.sleep(0.01)
        return outcome


async def test_a_caller_cancelled_before_the_commits_answer_leaves_it_applied(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = _SlowAckStore()
    async with open_ledger(store=store) as ledger:
        await fund(ledger, kes_cents=1000)
        await settle(ledger.system)
        with trio.move_on_after(0.005):
            await ledger.create_transfers(
                [transfer("t", "mpesa_float", "customer_in_transit_kes", 400)]
            )
        await settle(ledger.system)
        assert any(t.id == tid("t") for t in store.all_transfers())
        report = await ledger.reconcile()
        assert report.clean, report


async def test_a_caller_cancelled_at_once_leaves_no_hold(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = InMemoryTransferStore()
    async with open_ledger(store=store) as ledger:
        await fund(ledger, kes_cents=1000)
        await settle(ledger.system)
        with trio.CancelScope() as scope:
            scope.cancel()  # cancelled at its first schedule point
            await ledger.create_transfers(
                [transfer("t", "mpesa_float", "customer_in_transit_kes", 1000)]
            )
        await settle(ledger.system)
        held = {
            code: await ledger.system.ref(LedgerAccount, code).ask(GetHeldGroups())
            for code in ("mpesa_float", "customer_in_transit_kes")
        }
        assert all(not groups for groups in held.values()), held
        r = await ledger.create_transfers(
            [transfer("u", "mpesa_float", "customer_in_transit_kes", 1)]
        )
        assert r.codes == [ResultCode.OK], r.codes


async def test_a_group_of_unknown_outcome_is_settled_once_the_store_answers(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The commit failed and the store could not be read: the holds stood until a
    restart, a retry of the same ids was refused as in flight, and the held amount
    kept refusing the float's payouts."""
    store = InMemoryTransferStore()
    async with open_ledger(store=store) as ledger:
        await fund(ledger, kes_cents=1000)
        payout = transfer("payout", "suspense_kes", "mpesa_float", 600)
        store.fail_commit = lambda group: "before"
        store.fail_reads = True
        with pytest.raises(LedgerOutcomeUnknown):
            await ledger.create_transfers([payout])
        store.fail_commit = None
        with pytest.raises(TransferStoreUnavailable):
            await ledger.settle_unknown_groups()  # still cannot say: kept for later
        store.fail_reads = False
        assert await ledger.settle_unknown_groups() == 1
        await settle(ledger.system)
        held = await ledger.system.ref(LedgerAccount, "mpesa_float").ask(GetHeldGroups())
        assert held == []
        assert (await ledger.create_transfers([payout])).codes == [ResultCode.OK]
        assert (await ledger.reconcile()).clean


class _HangingStore(InMemoryTransferStore):
    hang = False

    async def commit(self, group_id: str, transfers: Sequence[Transfer]) -> CommitOutcome:
        if self.hang:
            await trio.sleep(400)  # a commit stuck past the net
        return await super().commit(group_id, transfers)


async def test_holds_of_a_group_cut_off_by_the_deadline_are_settled(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The net raised "outcome unknown" without handing the group to the settler: its
    holds stood on a busy account until a restart."""
    store = _HangingStore()
    # A hot account is never idle long enough to passivate (doc/ledger.md).
    async with open_ledger(store=store, config=EngineConfig(passivate_after_s=None)) as ledger:
        await fund(ledger, kes_cents=1000)
        await settle(ledger.system)
        store.hang = True
        payout = transfer("payout", "mpesa_float", "customer_in_transit_kes", 600)
        with pytest.raises(LedgerOutcomeUnknown):
            await ledger.create_transfers([payout])
        store.hang = False
        assert await ledger.settle_unknown_groups() == 1  # what the 30 s settler runs
        await settle(ledger.system)
        held = await ledger.system.ref(LedgerAccount, "mpesa_float").ask(GetHeldGroups())
        assert held == [], f"holds left until a restart: {held}"
        # and the float can pay out again
        other = transfer("other", "mpesa_float", "customer_in_transit_kes", 600)
        assert (await ledger.create_transfers([other])).codes == [ResultCode.OK]
