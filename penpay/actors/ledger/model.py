"""The ledger's pure domain: transfers, balances, and every rule, with no I/O.

Modelled on TigerBeetle. A :class:`Transfer` moves ``amount_cents`` of one
currency from a debit account to a credit account, so every transfer is
balanced by construction. Its ``kind`` is one of:

- ``posted``: moves money now;
- ``pending``: reserves money (the first phase of a two-phase transfer);
- ``post_pending``: completes a pending transfer, for its full amount or for
  less (the remainder is released);
- ``void_pending``: releases a pending transfer entirely.

A pending transfer is resolved (posted or voided) exactly once. Each
function here returns a :class:`ResultCode` instead of raising, so the
service can report precisely which transfer of a linked group failed and why.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from penpay.actors.ledger.chart import AccountSpec, Chart, Side
from penpay.money import Currency
from penpay.text import storable_text

#: Longest accepted ``code`` (the reason a transfer was made) and ``transaction_id``.
TEXT_FIELD_CHARS_MAX = 64
#: The largest amount a transfer row can hold (PostgreSQL's bigint).
AMOUNT_CENTS_MAX = 2**63 - 1
#: Most transfers one linked group may hold (TigerBeetle's batch limit is 8,190).
GROUP_TRANSFERS_MAX = 64


class TransferKind(enum.StrEnum):
    POSTED = "posted"
    PENDING = "pending"
    POST_PENDING = "post_pending"
    VOID_PENDING = "void_pending"

    @property
    def resolves_pending(self) -> bool:
        return self in (TransferKind.POST_PENDING, TransferKind.VOID_PENDING)


class ResultCode(enum.StrEnum):
    """The outcome of one transfer; names follow TigerBeetle's result codes."""

    OK = "ok"
    EXISTS = "exists"
    LINKED_EVENT_FAILED = "linked_event_failed"
    ID_MUST_BE_UUID = "id_must_be_uuid"
    DUPLICATE_ID_IN_GROUP = "duplicate_id_in_group"
    GROUP_TOO_LARGE = "group_too_large"
    AMOUNT_MUST_BE_POSITIVE = "amount_must_be_positive"
    AMOUNT_TOO_LARGE = "amount_too_large"
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    DEBIT_ACCOUNT_NOT_FOUND = "debit_account_not_found"
    CREDIT_ACCOUNT_NOT_FOUND = "credit_account_not_found"
    CURRENCY_MISMATCH = "currency_mismatch"
    CODE_TOO_LONG = "code_too_long"
    TRANSACTION_ID_TOO_LONG = "transaction_id_too_long"
    #: NUL or a lone surrogate: text PostgreSQL cannot store.
    TEXT_NOT_STORABLE = "text_not_storable"
    PENDING_ID_MUST_BE_UUID = "pending_id_must_be_uuid"
    PENDING_ID_MUST_NOT_BE_SET = "pending_id_must_not_be_set"
    PENDING_ID_MUST_BE_DIFFERENT = "pending_id_must_be_different"
    PENDING_TRANSFER_NOT_FOUND = "pending_transfer_not_found"
    PENDING_TRANSFER_NOT_PENDING = "pending_transfer_not_pending"
    PENDING_TRANSFER_ALREADY_POSTED = "pending_transfer_already_posted"
    PENDING_TRANSFER_ALREADY_VOIDED = "pending_transfer_already_voided"
    PENDING_TRANSFER_IN_FLIGHT = "pending_transfer_in_flight"
    PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT = "pending_transfer_has_different_debit_account"
    PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT = "pending_transfer_has_different_credit_account"
    PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY = "pending_transfer_has_different_currency"
    PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT = "pending_transfer_has_different_amount"
    EXCEEDS_PENDING_TRANSFER_AMOUNT = "exceeds_pending_transfer_amount"
    EXCEEDS_CREDITS = "exceeds_credits"
    EXCEEDS_DEBITS = "exceeds_debits"
    ID_IN_FLIGHT = "id_in_flight"
    EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT = "exists_with_different_debit_account"
    EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT = "exists_with_different_credit_account"
    EXISTS_WITH_DIFFERENT_AMOUNT = "exists_with_different_amount"
    EXISTS_WITH_DIFFERENT_CURRENCY = "exists_with_different_currency"
    EXISTS_WITH_DIFFERENT_KIND = "exists_with_different_kind"
    EXISTS_WITH_DIFFERENT_PENDING_ID = "exists_with_different_pending_id"
    EXISTS_WITH_DIFFERENT_TRANSACTION_ID = "exists_with_different_transaction_id"
    EXISTS_WITH_DIFFERENT_CODE = "exists_with_different_code"

    @property
    def succeeded(self) -> bool:
        return self in (ResultCode.OK, ResultCode.EXISTS)

    @property
    def retryable(self) -> bool:
        """A transient conflict with a concurrent request; the same request may succeed later."""
        return self in (ResultCode.ID_IN_FLIGHT, ResultCode.PENDING_TRANSFER_IN_FLIGHT)


class Transfer(msgspec.Struct, frozen=True, kw_only=True):
    """One immutable row of the ledger of record.

    ``timestamp_ms`` and ``linked_group`` are assigned by the ledger when the
    transfer commits (leave them at their defaults); they are not compared
    when an id is resubmitted.
    """

    id: str
    debit_account: str
    credit_account: str
    amount_cents: int
    currency: Currency
    kind: TransferKind = TransferKind.POSTED
    pending_id: str | None = None
    transaction_id: str | None = None
    code: str = ""
    timestamp_ms: int = 0
    linked_group: str | None = None


#: Fields compared when an id is resubmitted, in the order they are reported.
_IDENTITY_FIELDS: tuple[tuple[str, ResultCode], ...] = (
    ("kind", ResultCode.EXISTS_WITH_DIFFERENT_KIND),
    ("pending_id", ResultCode.EXISTS_WITH_DIFFERENT_PENDING_ID),
    ("debit_account", ResultCode.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT),
    ("credit_account", ResultCode.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT),
    ("currency", ResultCode.EXISTS_WITH_DIFFERENT_CURRENCY),
    ("amount_cents", ResultCode.EXISTS_WITH_DIFFERENT_AMOUNT),
    ("transaction_id", ResultCode.EXISTS_WITH_DIFFERENT_TRANSACTION_ID),
    ("code", ResultCode.EXISTS_WITH_DIFFERENT_CODE),
)


def new_transfer_id() -> str:
    """A fresh random transfer id; sagas should derive theirs from persisted state instead."""
    return str(uuid.uuid4())


#: ``str(uuid.UUID(x))``'s form: lowercase hex, hyphenated 8-4-4-4-12.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _is_canonical_uuid(value: str) -> bool:
    """True if ``value`` is a UUID written as ``str(uuid.UUID(...))`` writes it."""
    return isinstance(value, str) and _CANONICAL_UUID.fullmatch(value) is not None


def compare_existing(new: Transfer, existing: Transfer) -> ResultCode:
    """``exists`` if a resubmitted id carries the same fields, else the first differing field."""
    for name, code in _IDENTITY_FIELDS:
        if getattr(new, name) != getattr(existing, name):
            return code
    return ResultCode.EXISTS


def validate_transfer(transfer: Transfer, chart: Mapping[str, AccountSpec]) -> ResultCode:
    """Rules that need nothing but the transfer and the chart."""
    t = transfer
    if not _is_canonical_uuid(t.id):
        return ResultCode.ID_MUST_BE_UUID
    if isinstance(t.amount_cents, bool) or not isinstance(t.amount_cents, int):
        return ResultCode.AMOUNT_MUST_BE_POSITIVE
    if t.amount_cents <= 0:
        return ResultCode.AMOUNT_MUST_BE_POSITIVE
    if t.amount_cents > AMOUNT_CENTS_MAX:
        return ResultCode.AMOUNT_TOO_LARGE
    if t.debit_account == t.credit_account:
        return ResultCode.ACCOUNTS_MUST_BE_DIFFERENT
    debit = chart.get(t.debit_account)
    if debit is None:
        return ResultCode.DEBIT_ACCOUNT_NOT_FOUND
    credit = chart.get(t.credit_account)
    if credit is None:
        return ResultCode.CREDIT_ACCOUNT_NOT_FOUND
    if debit.currency is not t.currency or credit.currency is not t.currency:
        return ResultCode.CURRENCY_MISMATCH
    if len(t.code) > TEXT_FIELD_CHARS_MAX:
        return ResultCode.CODE_TOO_LONG
    if t.transaction_id is not None and len(t.transaction_id) > TEXT_FIELD_CHARS_MAX:
        return ResultCode.TRANSACTION_ID_TOO_LONG
    if not storable_text(t.code) or not storable_text(t.transaction_id or ""):
        return ResultCode.TEXT_NOT_STORABLE
    if t.kind.resolves_pending:
        if t.pending_id is None or not _is_canonical_uuid(t.pending_id):
            return ResultCode.PENDING_ID_MUST_BE_UUID
        if t.pending_id == t.id:
            return ResultCode.PENDING_ID_MUST_BE_DIFFERENT
    elif t.pending_id is not None:
        return ResultCode.PENDING_ID_MUST_NOT_BE_SET
    return ResultCode.OK


def validate_group(group: Sequence[Transfer], chart: Chart) -> list[ResultCode]:
    """Static rules for every transfer of a linked group, one code each."""
    if len(group) > GROUP_TRANSFERS_MAX:
        return [ResultCode.GROUP_TOO_LARGE] * len(group)
    codes: list[ResultCode] = []
    seen_ids: set[str] = set()
    seen_pending: set[str] = set()
    for transfer in group:
        code = validate_transfer(transfer, chart)
        if code is ResultCode.OK and transfer.id in seen_ids:
            code = ResultCode.DUPLICATE_ID_IN_GROUP
        if code is ResultCode.OK and transfer.pending_id is not None:
            if transfer.pending_id in seen_pending or transfer.pending_id in seen_ids:
                # Resolving a pending twice in one group, or one created in the same group.
                code = ResultCode.PENDING_TRANSFER_IN_FLIGHT
            seen_pending.add(transfer.pending_id)
        seen_ids.add(transfer.id)
        codes.append(code)
    return codes


def check_against_pending(
    transfer: Transfer, pending: Transfer | None, resolution: Transfer | None
) -> ResultCode:
    """Rules for a ``post_pending``/``void_pending`` given the pending transfer it names.

    ``resolution`` is the transfer that already posted or voided it, if any.
    """
    if pending is None:
        return ResultCode.PENDING_TRANSFER_NOT_FOUND
    if pending.kind is not TransferKind.PENDING:
        return ResultCode.PENDING_TRANSFER_NOT_PENDING
    if resolution is not None and resolution.id != transfer.id:
        if resolution.kind is TransferKind.POST_PENDING:
            return ResultCode.PENDING_TRANSFER_ALREADY_POSTED
        return ResultCode.PENDING_TRANSFER_ALREADY_VOIDED
    if transfer.debit_account != pending.debit_account:
        return ResultCode.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT
    if transfer.credit_account != pending.credit_account:
        return ResultCode.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT
    if transfer.currency is not pending.currency:
        return ResultCode.PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY
    if transfer.amount_cents > pending.amount_cents:
        return ResultCode.EXCEEDS_PENDING_TRANSFER_AMOUNT
    if transfer.kind is TransferKind.VOID_PENDING and transfer.amount_cents != pending.amount_cents:
        return ResultCode.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
    return ResultCode.OK


def resolution_of(
    pending: Transfer,
    *,
    transfer_id: str,
    void: bool,
    amount_cents: int | None = None,
    code: str = "",
    transaction_id: str | None = None,
) -> Transfer:
    """The ``post_pending`` (or ``void_pending``) transfer for ``pending``.

    Posting takes the full pending amount unless ``amount_cents`` asks for less.
    """
    amount = pending.amount_cents if void or amount_cents is None else amount_cents
    return Transfer(
        id=transfer_id,
        debit_account=pending.debit_account,
        credit_account=pending.credit_account,
        amount_cents=amount,
        currency=pending.currency,
        kind=TransferKind.VOID_PENDING if void else TransferKind.POST_PENDING,
        pending_id=pending.id,
        transaction_id=transaction_id if transaction_id is not None else pending.transaction_id,
        code=code or pending.code,
    )


# ----------------------------------------------------------------- balances


class Balance(msgspec.Struct, kw_only=True):
    """Debits and credits of one account, posted and pending, in cents."""

    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def copy(self) -> Balance:
        return Balance(
            debits_posted=self.debits_posted,
            credits_posted=self.credits_posted,
            debits_pending=self.debits_pending,
            credits_pending=self.credits_pending,
        )

    def net_posted(self, normal_side: Side) -> int:
        """Posted balance on the account's normal side (positive when normal)."""
        net = self.debits_posted - self.credits_posted
        return net if normal_side is Side.DEBIT else -net


def admit(
    spec: AccountSpec,
    balance: Balance,
    side: Side,
    amount_cents: int,
    *,
    reserved_debits_cents: int = 0,
    reserved_credits_cents: int = 0,
) -> ResultCode:
    """Whether ``amount_cents`` more on ``side`` keeps the account within its flags.

    Counts posted and pending amounts and any reservations not yet confirmed,
    against *posted* amounts of the other side only, as TigerBeetle does: a
    pending credit cannot fund a debit until it is posted.
    """
    assert amount_cents > 0, amount_cents
    if side is Side.DEBIT and spec.debits_must_not_exceed_credits:
        debits = balance.debits_posted + balance.debits_pending + reserved_debits_cents
        if debits + amount_cents > balance.credits_posted:
            return ResultCode.EXCEEDS_CREDITS
    if side is Side.CREDIT and spec.credits_must_not_exceed_debits:
        credits = balance.credits_posted + balance.credits_pending + reserved_credits_cents
        if credits + amount_cents > balance.debits_posted:
            return ResultCode.EXCEEDS_DEBITS
    return ResultCode.OK


def within_flags(spec: AccountSpec, balance: Balance) -> bool:
    """The invariant every account keeps at every moment."""
    if spec.debits_must_not_exceed_credits and (
        balance.debits_posted + balance.debits_pending > balance.credits_posted
    ):
        return False
    return not (
        spec.credits_must_not_exceed_debits
        and balance.credits_posted + balance.credits_pending > balance.debits_posted
    )


def apply_effect(
    balance: Balance, side: Side, kind: TransferKind, amount_cents: int, pending_amount_cents: int
) -> None:
    """Apply one committed transfer's effect on one side of one account, in place.

    ``pending_amount_cents`` is the amount of the pending transfer a
    ``post_pending``/``void_pending`` resolves (0 otherwise): it is released
    in full, and a post then adds its own (possibly smaller) amount as posted.
    """
    debit = side is Side.DEBIT
    if kind is TransferKind.POSTED:
        if debit:
            balance.debits_posted += amount_cents
        else:
            balance.credits_posted += amount_cents
    elif kind is TransferKind.PENDING:
        if debit:
            balance.debits_pending += amount_cents
        else:
            balance.credits_pending += amount_cents
    else:
        posted = amount_cents if kind is TransferKind.POST_PENDING else 0
        if debit:
            balance.debits_pending -= pending_amount_cents
            balance.debits_posted += posted
        else:
            balance.credits_pending -= pending_amount_cents
            balance.credits_posted += posted
    assert min(balance.debits_pending, balance.credits_pending) >= 0, balance


class BalanceReplay:
    """Balances recomputed from transfer rows fed in commit order, a few at a time.

    A checker that watches a growing table feeds it only the new rows, so
    checking after every step costs the step, not the whole history.
    """

    def __init__(self) -> None:
        self.balances: dict[str, Balance] = {}
        self._pending_amounts: dict[str, int] = {}

    def apply(self, transfers: Iterable[Transfer]) -> None:
        balances, pending_amounts = self.balances, self._pending_amounts
        for t in transfers:
            pending_amount = 0
            if t.kind is TransferKind.PENDING:
                pending_amounts[t.id] = t.amount_cents
            elif t.kind.resolves_pending:
                assert t.pending_id is not None
                pending_amount = pending_amounts.pop(t.pending_id)
            for account, side in (
                (t.debit_account, Side.DEBIT), (t.credit_account, Side.CREDIT)
            ):
                balance = balances.setdefault(account, Balance())
                apply_effect(balance, side, t.kind, t.amount_cents, pending_amount)


def replay_balances(transfers: Iterable[Transfer]) -> dict[str, Balance]:
    """Every account's balance recomputed from transfer rows (in commit order)."""
    replay = BalanceReplay()
    replay.apply(transfers)
    return replay.balances


class TrialBalanceLine(msgspec.Struct, frozen=True, kw_only=True):
    """Totals of one currency over every account."""

    currency: Currency
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    @property
    def balanced(self) -> bool:
        return (
            self.debits_posted == self.credits_posted
            and self.debits_pending == self.credits_pending
        )


def trial_balance(
    chart: Chart, balances: Mapping[str, Balance]
) -> dict[Currency, TrialBalanceLine]:
    """Σ debits and Σ credits per currency; equal when the ledger is sound."""
    lines: dict[Currency, TrialBalanceLine] = {}
    for currency in chart.currencies():
        totals = [0, 0, 0, 0]
        for code, spec in chart.items():
            if spec.currency is not currency or code not in balances:
                continue
            b = balances[code]
            totals[0] += b.debits_posted
            totals[1] += b.credits_posted
            totals[2] += b.debits_pending
            totals[3] += b.credits_pending
        lines[currency] = TrialBalanceLine(
            currency=currency,
            debits_posted=totals[0],
            credits_posted=totals[1],
            debits_pending=totals[2],
            credits_pending=totals[3],
        )
    return lines
