from __future__ import annotations

import trio

from penpay.actors.ledger import ResultCode, TransferKind
from tests.ledger.helpers import fund, open_ledger, tid, transfer


async def test_pending_then_post(autojump_clock: trio.abc.Clock) -> None:
    async with open_ledger() as ledger:
        await fund(ledger)
        r = await ledger.create_transfers(
            [
                transfer(
                    "p1",
                    "customer_in_transit_kes",
                    "mpesa_float",
                    0 + 50_000,
                    kind=TransferKind.PENDING,
                )
            ]
        )
        assert r.codes == [ResultCode.EXCEEDS_CREDITS], r
        r = await ledger.create_transfers(
            [transfer("p2", "owner_equity_kes", "mpesa_float", 50_000, kind=TransferKind.PENDING)]
        )
        assert r.ok, r
        b = await ledger.balance("mpesa_float")
        assert b.credits_pending == 50_000
        r = await ledger.post_pending(tid("post2"), tid("p2"), amount_cents=30_000)
        assert r.ok, r
        b = await ledger.balance("mpesa_float")
        assert (b.credits_pending, b.credits_posted, b.debits_posted) == (0, 30_000, 1_000_000)
        r = await ledger.post_pending(tid("post2b"), tid("p2"))
        assert r.codes == [ResultCode.PENDING_TRANSFER_ALREADY_POSTED], r
        r = await ledger.post_pending(tid("post2"), tid("p2"), amount_cents=30_000)
        assert r.codes == [ResultCode.EXISTS], r
        report = await ledger.reconcile()
        assert report.clean, report
