"""The double-entry ledger: chart of accounts, transfers, account actors, the service.

TigerBeetle's model on PenPay's actor engine: accounts with balance flags,
transfers that are posted at once or pending then posted/voided, linked
groups applied all or nothing, and idempotent transfer ids. See
``doc/ledger.md``.
"""

from penpay.actors.ledger.account import LedgerAccount
from penpay.actors.ledger.chart import DEFAULT_CHART, AccountSpec, Chart, Side
from penpay.actors.ledger.errors import (
    AccountRefused,
    LedgerError,
    LedgerOutcomeUnknown,
    LedgerUnavailable,
    TransferRowRefused,
    TransferStoreUnavailable,
)
from penpay.actors.ledger.model import (
    Balance,
    ResultCode,
    Transfer,
    TransferKind,
    TrialBalanceLine,
    new_transfer_id,
)
from penpay.actors.ledger.service import (
    AccountDrift,
    GroupResult,
    Ledger,
    ReconcileReport,
    TransferResult,
    run_unknown_settler,
)
from penpay.actors.ledger.store import CommitOutcome, TransferPage, TransferStore

__all__ = [
    "DEFAULT_CHART",
    "AccountDrift",
    "AccountRefused",
    "AccountSpec",
    "Balance",
    "Chart",
    "CommitOutcome",
    "GroupResult",
    "Ledger",
    "LedgerAccount",
    "LedgerError",
    "LedgerOutcomeUnknown",
    "LedgerUnavailable",
    "ReconcileReport",
    "ResultCode",
    "Side",
    "Transfer",
    "TransferKind",
    "TransferPage",
    "TransferResult",
    "TransferRowRefused",
    "TransferStore",
    "TransferStoreUnavailable",
    "TrialBalanceLine",
    "new_transfer_id",
    "run_unknown_settler",
]
