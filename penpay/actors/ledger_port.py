"""Turns a flow's named postings into ledger transfers.

Transfer ids are derived from the transaction id and the posting's name
(:meth:`Posting.transfer_id`), so posting the same step again, as a restarted
transaction does, is an idempotent ``exists`` rather than a second movement.
"""

from __future__ import annotations

from penpay.actors.ledger import GroupResult, Ledger, Transfer, TransferKind
from penpay.actors.saga import Account, Leg, Posting, PostingKind
from penpay.actors.transaction import LedgerRefused
from penpay.money import Currency


def _transfers(transaction_id: str, posting: Posting, kind: TransferKind) -> list[Transfer]:
    return [
        Transfer(
            id=posting.transfer_id(transaction_id, index),
            debit_account=leg.debit,
            credit_account=leg.credit,
            amount_cents=leg.amount_cents,
            currency=leg.currency,
            kind=kind,
            transaction_id=transaction_id,
            code=posting.name,
        )
        for index, leg in enumerate(posting.legs)
    ]


class LedgerAdapter:
    """The :class:`~penpay.actors.transaction.LedgerPort` over :class:`Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def post(self, transaction_id: str, posting: Posting) -> None:
        result: GroupResult
        match posting.kind:
            case PostingKind.POSTED:
                transfers = _transfers(transaction_id, posting, TransferKind.POSTED)
                result = await self.ledger.create_transfers(transfers)
            case PostingKind.HOLD:
                transfers = _transfers(transaction_id, posting, TransferKind.PENDING)
                result = await self.ledger.create_transfers(transfers)
            case PostingKind.POST_HOLD | PostingKind.VOID_HOLD:
                assert posting.hold is not None
                hold_id = Posting(name=posting.hold, kind=PostingKind.HOLD).transfer_id(
                    transaction_id, 0
                )
                resolve = (
                    self.ledger.post_pending
                    if posting.kind is PostingKind.POST_HOLD
                    else self.ledger.void_pending
                )
                result = await resolve(
                    posting.transfer_id(transaction_id, 0),
                    hold_id,
                    code=posting.name,
                    transaction_id=transaction_id,
                )
        if not result.ok:
            codes = ", ".join(code.value for code in result.codes)
            raise LedgerRefused(f"{posting.name}: {codes}")


#: The transaction id owner-capital postings are booked under.
CAPITAL_TRANSACTION_ID = "00000000-0000-7000-8000-000000000000"


async def fund(
    ledger: Ledger, *, name: str, float_account: Account, equity: Account, amount_cents: int,
    currency: Currency,
) -> str | None:
    """Book owner capital into a float once (idempotent by ``name``); its transfer id."""
    if amount_cents <= 0:
        return None
    posting = Posting(
        name=name,
        kind=PostingKind.POSTED,
        legs=(Leg(float_account, equity, amount_cents, currency),),
    )
    await LedgerAdapter(ledger).post(CAPITAL_TRANSACTION_ID, posting)
    return posting.transfer_id(CAPITAL_TRANSACTION_ID)
