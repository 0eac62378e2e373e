"""Exceptions of the ledger. Business refusals are *results*, not exceptions.

:meth:`Ledger.create_transfers` reports refusals (``exceeds_credits``,
``exists_with_different_amount``, …) as :class:`~penpay.actors.ledger.model.ResultCode`
values. Exceptions are kept for the cases where the ledger could not decide.
"""

from __future__ import annotations

from penpay.actors.ledger.model import ResultCode
from penpay.engine import Rejection
from penpay.errors import PenPayError


class LedgerError(PenPayError):
    """Base class of ledger failures."""


class LedgerUnavailable(LedgerError):
    """Nothing was applied (an account actor or the store failed first); retry the same request.

    Retrying with the same transfer ids is always safe: a transfer that did
    commit after all is reported as ``exists``.
    """


class LedgerOutcomeUnknown(LedgerError):
    """The store could not confirm whether the group committed.

    The holds stay reserved (they are durable) until the store answers:
    :meth:`~penpay.actors.ledger.Ledger.settle_unknown_groups` (run every
    30 s) or recovery then confirms or releases them. Retry the same request
    after that and it answers ``exists`` if it committed, or runs afresh.
    """


class TransferStoreUnavailable(LedgerError):
    """The transfer store failed; for a commit, whether it took effect is unknown."""


class AccountRefused(Rejection):
    """An account actor refused a hold; ``code`` says why, ``transfer_id`` which one."""

    def __init__(self, code: ResultCode, transfer_id: str) -> None:
        super().__init__(f"{code.value}: transfer {transfer_id}")
        self.code = code
        self.transfer_id = transfer_id


class TransferRowRefused(LedgerError):
    """The store's own constraints refused a row; nothing of the group was written.

    The service validates every rule first, so this means a bug upstream (or
    a chart that does not match the store's accounts): the database is the
    last line of defence, not the place rules are decided.
    """
