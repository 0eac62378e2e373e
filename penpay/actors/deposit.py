"""The deposit flow: M-Pesa STK Push in KES, then a Deriv credit in USD.

A pure state machine (see :mod:`penpay.actors.saga`). Happy path::

    PENDING --stk accepted--> AWAITING_MPESA_CALLBACK --paid (confirmed by query)-->
    AWAITING_DERIV_CONFIRMATION --credited--> COMPLETED

Failures before money moved end in FAILED. If M-Pesa took the money and
Deriv refused the credit, the shillings go back by B2C: REVERSING, then
REVERSED. A refusal "for now" (rate limit, "Request too frequent",
maintenance) is no refusal: the same credit is sent again after a back-off,
and only a refusal that outlasts every resend is refunded. An outcome nobody
can establish ends in NEEDS_REVIEW, with the collected shillings moved to
suspense until an operator resolves it.

Ledger, for a deposit of ``U`` USD paid with ``K`` KES (see doc/ledger.md):

- at creation, a hold reserves the Deriv float:
  ``fx_position_usd -> deriv_float`` U (pending; the float's flag refuses it
  when the float cannot cover the deposit);
- when M-Pesa confirms: ``mpesa_float -> customer_in_transit_kes`` K;
- when Deriv confirms, the KES side of the conversion is posted as one linked
  group: ``customer_in_transit_kes`` K to ``fx_position_kes`` (at mid),
  ``fx_spread_revenue_kes`` and ``rounding_kes``; then the hold is posted,
  which is the USD side;
- refund: the hold is voided, then ``customer_in_transit_kes -> mpesa_float``
  K once B2C has paid.
"""

from __future__ import annotations

import msgspec

from penpay.actors.fx import Quote
from penpay.actors.saga import (
    B2C_FINAL_FAILURES,
    TERMINAL,
    Account,
    B2CAccepted,
    B2CRejected,
    B2CResult,
    B2CUnknown,
    Command,
    CreditDeriv,
    Deadline,
    DerivCredited,
    DerivLookup,
    DerivRejected,
    DerivRetryLater,
    DerivUnknown,
    Failure,
    FindDerivTransfer,
    Input,
    Leg,
    Notify,
    PayB2C,
    Posting,
    PostingKind,
    PostLedger,
    QueryB2C,
    QueryStk,
    Resolve,
    ResolveRefused,
    SagaTimings,
    SetTimer,
    StartStkPush,
    Status,
    StatusChange,
    StkCallback,
    StkPushAccepted,
    StkPushRejected,
    StkPushUnknown,
    StkQueryResult,
    deriv_resend_delay_ms,
    kes_posting,
    short_reference,
    stk_failure_code,
)
from penpay.money import Currency

FLOAT_HOLD = "deriv_float_hold"

#: Daraja's sync error for a repeated OriginatorConversationID.
DUPLICATE_ORIGINATOR = "500.002.1001"

# ------------------------------------------------------------------------ state


class DepositState(msgspec.Struct, frozen=True, kw_only=True):
    transaction_id: str = ""
    user_id: str = ""
    phone: str = ""
    deriv_login_id: str = ""
    quote: Quote | None = None
    callback_token: str = ""
    status: Status = Status.PENDING
    history: tuple[StatusChange, ...] = ()
    created_at_ms: int = 0
    updated_at_ms: int = 0
    stk_deadline_ms: int = 0
    stk_push_unknown: bool = False
    merchant_request_id: str | None = None
    checkout_request_id: str | None = None
    stk_queries: int = 0
    paid_claimed: bool = False  # a callback said paid; awaiting the query to confirm
    mpesa_receipt: str | None = None
    deriv_reference: str | None = None
    #: When the credit under ``deriv_reference`` was first sent: its lookups read
    #: the statement from there (less a margin), not from the deposit's creation,
    #: which a long wait for M-Pesa could put thousands of rows back.
    deriv_sent_at_ms: int = 0
    deriv_attempt: int = 0
    deriv_unknown: bool = False
    deriv_lookups: int = 0
    #: How often Deriv refused the current reference "for now" (DerivRetryLater).
    deriv_deferrals: int = 0
    #: When the refused credit is sent again; None: no resend is waiting (a
    #: value means the last call under the reference did nothing and no call
    #: is in flight).
    deriv_resend_at_ms: int | None = None
    deriv_transaction_id: int | None = None
    refund_originator_id: str | None = None
    #: Which refund attempt ``refund_originator_id`` names (0: none yet).
    refund_attempt: int = 0
    #: The attempt is known to have failed for good, so another may be made.
    refund_failed: bool = False
    refund_conversation_id: str | None = None
    refund_unknown: bool = False
    refund_queries: int = 0
    refund_receipt: str | None = None
    failure: Failure | None = None
    review_reason: str | None = None
    in_suspense: bool = False
    #: How many times collected money went to suspense (each cycle has its own
    #: posting names, so a second review is not mistaken for a replay).
    suspensions: int = 0
    review_queries: int = 0
    #: Float holds given back before this deposit started (a Start that failed
    #: and was abandoned). A released hold cannot be taken again under its
    #: name, so the next Start takes hold number ``float_holds_released``.
    float_holds_released: int = 0

    @property
    def started(self) -> bool:
        return self.quote is not None


# ----------------------------------------------------------------------- events


class DepositEvent(msgspec.Struct, frozen=True):
    at_ms: int


class Created(DepositEvent, frozen=True, tag="deposit.created"):
    transaction_id: str
    user_id: str
    phone: str
    deriv_login_id: str
    quote: Quote
    callback_token: str
    stk_deadline_ms: int


class StkAccepted(DepositEvent, frozen=True, tag="deposit.stk_accepted"):
    merchant_request_id: str
    checkout_request_id: str


class StkUnknown(DepositEvent, frozen=True, tag="deposit.stk_unknown"):
    reason: str


class PaymentClaimed(DepositEvent, frozen=True, tag="deposit.payment_claimed"):
    """A callback said paid; a query must confirm before the money counts."""

    checkout_request_id: str
    receipt: str | None


class StkQueried(DepositEvent, frozen=True, tag="deposit.stk_queried"):
    pass


class MpesaPaid(DepositEvent, frozen=True, tag="deposit.mpesa_paid"):
    receipt: str | None
    deriv_reference: str  # persisted before the Deriv call that carries it


class Failed(DepositEvent, frozen=True, tag="deposit.failed"):
    code: str
    detail: str


class DerivCreditUnknown(DepositEvent, frozen=True, tag="deposit.deriv_unknown"):
    reference: str
    reason: str


class DerivLookedUp(DepositEvent, frozen=True, tag="deposit.deriv_looked_up"):
    reference: str


class DerivCreditDeferred(DepositEvent, frozen=True, tag="deposit.deriv_deferred"):
    """Deriv refused the credit for now, before doing anything: resend at ``resend_at_ms``."""

    reference: str
    reason: str
    resend_at_ms: int


class DerivCreditResent(DepositEvent, frozen=True, tag="deposit.deriv_resent"):
    """The deferred credit goes out again under the same reference."""

    reference: str


class DerivRetried(DepositEvent, frozen=True, tag="deposit.deriv_retried"):
    """The previous attempt provably moved nothing; a new reference is used."""

    reference: str


class Completed(DepositEvent, frozen=True, tag="deposit.completed"):
    deriv_transaction_id: int


class RefundStarted(DepositEvent, frozen=True, tag="deposit.refund_started"):
    reason_code: str
    detail: str
    originator_conversation_id: str
    attempt: int = 1


class RefundAccepted(DepositEvent, frozen=True, tag="deposit.refund_accepted"):
    conversation_id: str


class RefundUnknown(DepositEvent, frozen=True, tag="deposit.refund_unknown"):
    reason: str


class RefundQueried(DepositEvent, frozen=True, tag="deposit.refund_queried"):
    pass


class RefundResent(DepositEvent, frozen=True, tag="deposit.refund_resent"):
    pass


class Refunded(DepositEvent, frozen=True, tag="deposit.refunded"):
    receipt: str | None


class ReviewQueried(DepositEvent, frozen=True, tag="deposit.review_queried"):
    """Parked without an M-Pesa answer: asked once more."""


class ReviewNeeded(DepositEvent, frozen=True, tag="deposit.review_needed"):
    reason: str


class RefundFailed(DepositEvent, frozen=True, tag="deposit.refund_failed"):
    """M-Pesa refused the refund for good: review, and a new attempt may be made."""

    reason: str


class FloatHoldReleased(DepositEvent, frozen=True, tag="deposit.float_hold_released"):
    """The float hold of a Start that never became a deposit was given back."""


class Resolved(DepositEvent, frozen=True, tag="deposit.resolved"):
    action: str
    note: str
    operator: str


EVENT_TYPES: tuple[type[DepositEvent], ...] = (
    Created, StkAccepted, StkUnknown, PaymentClaimed, StkQueried, MpesaPaid, Failed,
    DerivCreditUnknown, DerivLookedUp, DerivRetried, Completed, RefundStarted, RefundAccepted,
    RefundUnknown, RefundQueried, RefundResent, Refunded, ReviewQueried, ReviewNeeded, Resolved,
    RefundFailed, DerivCreditDeferred, DerivCreditResent, FloatHoldReleased,
)


class Start(Input, frozen=True, tag="deposit_start"):
    transaction_id: str
    user_id: str
    phone: str
    deriv_login_id: str
    quote: Quote
    callback_token: str


# --------------------------------------------------------------------- postings


def _numbered(name: str, hold_number: int) -> str:
    """The first hold keeps the plain names; a later one (after a release) is numbered."""
    return name if hold_number == 0 else f"{name}_{hold_number}"


def float_hold(quote: Quote, hold_number: int = 0) -> Posting:
    """The reservation of the Deriv float taken before a deposit is accepted."""
    # The USD leaves the float for the FX position that "bought" it; posting this
    # hold is the USD side of the conversion. (Debiting the customer liability here
    # instead would overdraw it: nothing has been credited to it yet.)
    leg = Leg(Account.FX_POSITION_USD, Account.DERIV_FLOAT, quote.usd_cents, Currency.USD)
    name = _numbered(FLOAT_HOLD, hold_number)
    return Posting(name=name, kind=PostingKind.HOLD, legs=(leg,))


def _kes(state: DepositState) -> int:
    assert state.quote is not None
    return state.quote.kes_cents


def _collected(state: DepositState) -> Posting:
    return kes_posting("mpesa_collected", Account.MPESA_FLOAT, Account.IN_TRANSIT_KES, _kes(state))


def _refunded(state: DepositState) -> Posting:
    return kes_posting("mpesa_refunded", Account.IN_TRANSIT_KES, Account.MPESA_FLOAT, _kes(state))


def _suspend(state: DepositState) -> Posting:
    name = f"suspense_in_{state.suspensions}"
    return kes_posting(name, Account.IN_TRANSIT_KES, Account.SUSPENSE_KES, _kes(state))


def _unsuspend(state: DepositState) -> Posting:
    name = f"suspense_out_{state.suspensions}"
    return kes_posting(name, Account.SUSPENSE_KES, Account.IN_TRANSIT_KES, _kes(state))


def _fx(state: DepositState) -> Posting:
    q = state.quote
    assert q is not None
    kes = Currency.KES
    legs = [Leg(Account.IN_TRANSIT_KES, Account.FX_POSITION_KES, q.kes_at_mid_cents, kes)]
    if q.spread_cents:
        legs.append(Leg(Account.IN_TRANSIT_KES, Account.SPREAD_REVENUE_KES, q.spread_cents, kes))
    if q.rounding_cents:
        legs.append(Leg(Account.IN_TRANSIT_KES, Account.ROUNDING_KES, q.rounding_cents, kes))
    return Posting(name="fx_conversion", kind=PostingKind.POSTED, legs=tuple(legs))


def _post_hold(state: DepositState) -> Posting:
    n = state.float_holds_released
    name, hold = _numbered("deriv_float_paid", n), _numbered(FLOAT_HOLD, n)
    return Posting(name=name, kind=PostingKind.POST_HOLD, hold=hold)


def release_float_hold(hold_number: int) -> Posting:
    """Releases float hold ``hold_number`` (idempotent)."""
    name, hold = _numbered("deriv_float_released", hold_number), _numbered(FLOAT_HOLD, hold_number)
    return Posting(name=name, kind=PostingKind.VOID_HOLD, hold=hold)


def _void_hold(state: DepositState) -> Posting:
    return release_float_hold(state.float_holds_released)


# ----------------------------------------------------------------------- decide


def _deriv_reference(state: DepositState, attempt: int) -> str:
    # Deriv's description allows [0-9A-Za-z .,'-]; the full id makes the statement
    # lookup unambiguous.
    return f"PenPay deposit {state.transaction_id} attempt {attempt}"


def _refund_originator(state: DepositState, attempt: int) -> str:
    base = f"PPR{state.transaction_id.replace('-', '')}"
    return base if attempt == 1 else f"{base}N{attempt}"


def _refund_started(
    state: DepositState, reason_code: str, detail: str, now_ms: int
) -> RefundStarted:
    """The refund, or another attempt at it once the last one failed for good.

    While the last attempt's outcome is unknown, the same OriginatorConversationID
    is sent again (Daraja refuses a duplicate and its status settles it), so the
    customer can never be refunded twice; only a known failure earns a new id.
    """
    attempt = state.refund_attempt + 1 if state.refund_failed else max(state.refund_attempt, 1)
    originator = _refund_originator(state, attempt)
    return RefundStarted(now_ms, reason_code, detail, originator, attempt)


def _money_collected(state: DepositState) -> bool:
    return state.deriv_reference is not None


def decide(
    state: DepositState, event: Input, now_ms: int, timings: SagaTimings
) -> list[DepositEvent]:
    """The events an input causes; [] when it changes nothing (duplicates, late news)."""
    match event:
        case Start():
            if state.started:
                return []  # idempotent: the transaction exists
            return [
                Created(
                    at_ms=now_ms,
                    transaction_id=event.transaction_id,
                    user_id=event.user_id,
                    phone=event.phone,
                    deriv_login_id=event.deriv_login_id,
                    quote=event.quote,
                    callback_token=event.callback_token,
                    stk_deadline_ms=now_ms + timings.stk_callback_ms,
                )
            ]
        case Resolve():
            return _decide_resolve(state, event, now_ms)
    if state.status is Status.NEEDS_REVIEW and _awaits_mpesa_answer(state):
        return _decide_review_query(state, event, now_ms, timings)
    if isinstance(event, StkCallback) and _parked_without_checkout(state):
        return _decide_late_callback(state, event, now_ms)
    if not state.started or state.status in TERMINAL or state.status is Status.NEEDS_REVIEW:
        return []
    match event:
        case StkPushAccepted() if state.status is Status.PENDING:
            return [StkAccepted(now_ms, event.merchant_request_id, event.checkout_request_id)]
        case StkPushRejected() if state.status is Status.PENDING:
            return [Failed(now_ms, "mpesa_rejected", f"{event.error_code}: {event.message}")]
        case StkPushUnknown() if state.status is Status.PENDING:
            return [StkUnknown(now_ms, event.reason)]
        case StkCallback():
            return _decide_stk_callback(state, event, now_ms)
        case StkQueryResult():
            return _decide_stk_query(state, event, now_ms, timings)
        case Deadline(name="stk"):
            return _decide_stk_deadline(state, now_ms, timings)
        case DerivCredited() | DerivRejected() | DerivUnknown() | DerivLookup() | DerivRetryLater():
            if state.status is not Status.AWAITING_DERIV_CONFIRMATION:
                return []  # late or duplicate news: the credit's outcome is settled
            return _decide_deriv(state, event, now_ms, timings)
        case Deadline(name="deriv_lookup") if state.deriv_unknown:
            return [DerivLookedUp(now_ms, state.deriv_reference or "")]
        case Deadline(name="deriv_resend") if _resend_due(state):
            return [DerivCreditResent(now_ms, state.deriv_reference or "")]
        case B2CAccepted() | B2CRejected() | B2CUnknown() | B2CResult():
            if (
                state.status is not Status.REVERSING
                or event.originator_conversation_id != state.refund_originator_id
            ):
                return []
            return _decide_refund(state, event, now_ms, timings)
        case Deadline(name="b2c") if state.status is Status.REVERSING:
            if state.refund_queries >= timings.b2c_queries_max:
                return [ReviewNeeded(now_ms, "refund outcome unknown after status queries")]
            return [RefundQueried(now_ms)]
    return []


def _decide_deriv(
    state: DepositState, event: Input, now_ms: int, timings: SagaTimings
) -> list[DepositEvent]:
    match event:
        case DerivCredited() if event.reference == state.deriv_reference:
            return [Completed(now_ms, event.deriv_transaction_id)]
        case DerivRejected() if event.reference == state.deriv_reference:
            detail = f"{event.code}: {event.message}"
            return [_refund_started(state, "deriv_rejected", detail, now_ms)]
        case DerivUnknown() if event.reference == state.deriv_reference:
            return [DerivCreditUnknown(now_ms, event.reference, event.reason)]
        case DerivLookup() if event.reference == state.deriv_reference and state.deriv_unknown:
            return _decide_deriv_lookup(state, event, now_ms, timings)
        case DerivRetryLater() if event.reference == state.deriv_reference:
            return _decide_deriv_deferral(state, event, now_ms, timings)
    return []  # news about another attempt's reference


def _resend_due(state: DepositState) -> bool:
    return (
        state.status is Status.AWAITING_DERIV_CONFIRMATION
        and state.deriv_resend_at_ms is not None
    )


def _decide_deriv_deferral(
    state: DepositState, event: DerivRetryLater, now_ms: int, timings: SagaTimings
) -> list[DepositEvent]:
    """Deriv refused the credit for now, before doing anything: send it again later.

    The resend keeps the reference: nothing was done under it, and a new one
    would leave the old one to be looked up for nothing. Refunding instead (as
    for a refusal) would send back shillings for a credit a minute's wait
    would have made. Ignored while a call under the reference has an unknown
    outcome (the statement settles that one) or a resend is already waiting
    (a duplicate). Once ``deriv_resends_max`` resends were refused too, the
    deposit is refunded: every call under the reference was refused before it
    did anything, so no USD reached the customer.
    """
    if state.deriv_unknown or state.deriv_resend_at_ms is not None:
        return []
    detail = f"{event.code}: {event.message}"
    if state.deriv_deferrals >= timings.deriv_resends_max:
        return [_refund_started(state, "deriv_unavailable", detail, now_ms)]
    delay_ms = deriv_resend_delay_ms(timings, state.deriv_deferrals, event.reference)
    return [DerivCreditDeferred(now_ms, event.reference, detail, now_ms + delay_ms)]


def _decide_refund(
    state: DepositState, event: Input, now_ms: int, timings: SagaTimings
) -> list[DepositEvent]:
    match event:
        case B2CAccepted():
            return [RefundAccepted(now_ms, event.conversation_id)]
        case B2CRejected() if event.error_code == DUPLICATE_ORIGINATOR:
            # Daraja already has this payout (we resent after a restart): ask its status.
            return [RefundUnknown(now_ms, "M-Pesa already holds this refund request")]
        case B2CRejected():
            if state.refund_conversation_id is not None or state.refund_unknown:
                # M-Pesa took (or may have taken) a request with this id: refusing a
                # resend proves nothing about it. Its status decides, then review.
                return []
            return [RefundFailed(now_ms, f"refund refused by M-Pesa: {event.error_code}")]
        case B2CUnknown():
            return [RefundUnknown(now_ms, event.reason)]
        case B2CResult():
            return _decide_refund_result(state, event, now_ms, timings)
    return []


def _parked_without_checkout(state: DepositState) -> bool:
    """In review because neither the STK answer nor a callback came by the deadline."""
    return (
        state.status is Status.NEEDS_REVIEW and state.started
        and state.checkout_request_id is None and not _money_collected(state)
    )


def _decide_late_callback(
    state: DepositState, event: StkCallback, now_ms: int
) -> list[DepositEvent]:
    """A callback for a deposit parked without its CheckoutRequestID.

    It came on this transaction's secret path and names the checkout, so the
    deposit is taken up where it would have been: awaiting M-Pesa, a claimed
    payment confirmed by query before it counts. Dropped, the customer's
    shillings would be left to an operator who could only fail the deposit.
    """
    accepted = StkAccepted(now_ms, "", event.checkout_request_id)
    return [accepted, *_decide_stk_callback(evolve(state, accepted), event, now_ms)]


def _awaits_mpesa_answer(state: DepositState) -> bool:
    """Parked in review with M-Pesa's answer still outstanding (and queryable)."""
    return state.checkout_request_id is not None and not _money_collected(state)


def _decide_review_query(
    state: DepositState, event: Input, now_ms: int, timings: SagaTimings
) -> list[DepositEvent]:
    """In review without an answer from M-Pesa: keep asking; settle on an answer that
    does not contradict the callback (see :func:`_decide_review_answer`)."""
    match event:
        case Deadline(name="stk_review"):
            if state.review_queries >= timings.stk_review_queries_max:
                return []  # a day without an answer: the operator decides
            return [ReviewQueried(now_ms)]
        case StkCallback() if event.checkout_request_id == state.checkout_request_id:
            return [ReviewQueried(now_ms)]  # a hint: ask now
        case StkQueryResult(result_code=None):
            return []
        case StkQueryResult() if event.checkout_request_id == state.checkout_request_id:
            return _decide_review_answer(state, event, now_ms)
    return []


def _decide_review_answer(
    state: DepositState, event: StkQueryResult, now_ms: int
) -> list[DepositEvent]:
    """A final STK Query answer while parked: "0" settles it as paid, a failure may not.

    When a callback claimed payment, a failure code contradicts it: the customer's
    shillings may have been taken, so failing (and voiding the float hold) would
    tell them no money moved. The conflict stays parked for an operator.

    The loop keeps querying through a conflict (still capped at a day): Daraja's
    query is known to misreport payments that exist (protocols.md, section 0), a
    later "0" makes both sources agree and is the only way the deposit proceeds
    as paid, since an operator cannot complete a payment no query confirmed.
    Repeats of the same failure add nothing to the journal.
    """
    if event.result_code == "0":
        return [MpesaPaid(now_ms, state.mpesa_receipt, _deriv_reference(state, 1))]
    code = stk_failure_code(event.result_code or "")
    if code is None:
        return []  # not an answer: keep asking, the operator sees the review
    if state.paid_claimed:
        return _paid_claim_contradicted(state, event, now_ms)
    return [Failed(now_ms, code, f"M-Pesa {event.result_code}: {event.result_desc}")]


def _paid_claim_contradicted(
    state: DepositState, event: StkQueryResult, now_ms: int
) -> list[DepositEvent]:
    """Parks a deposit whose callback said paid and whose query says it failed.

    Neither source wins on its own, so an operator checks the receipt against
    the M-Pesa statement. A repeat of the reason already shown changes nothing.
    """
    reason = f"callback said paid, query says {event.result_code}"
    if state.status is Status.NEEDS_REVIEW and state.review_reason == reason:
        return []
    return [ReviewNeeded(now_ms, reason)]


def _decide_stk_callback(
    state: DepositState, event: StkCallback, now_ms: int
) -> list[DepositEvent]:
    if state.status not in (Status.PENDING, Status.AWAITING_MPESA_CALLBACK):
        return []  # late or duplicate: the outcome is already settled
    if state.checkout_request_id not in (None, event.checkout_request_id):
        return []  # not ours: a hint that does not match is ignored (and audited by the shell)
    if state.paid_claimed:
        return []  # duplicate of a success we are already confirming
    accepted: list[DepositEvent] = []
    if state.checkout_request_id is None:
        # The STK response was lost; the callback (on our secret path) tells us the id.
        accepted.append(StkAccepted(now_ms, "", event.checkout_request_id))
    if event.result_code == "0":
        assert state.quote is not None
        if event.amount_kes_cents != state.quote.kes_cents or event.phone != state.phone:
            # Not what we asked for: ignore the hint; the STK query at the deadline
            # is authoritative either way. (The shell audits the mismatch.)
            return accepted
        return [*accepted, PaymentClaimed(now_ms, event.checkout_request_id, event.receipt)]
    code = stk_failure_code(event.result_code)
    if code is None:
        return accepted  # a code nobody knows is a hint at most: the STK query decides
    return [*accepted, Failed(now_ms, code, f"M-Pesa {event.result_code}: {event.result_desc}")]


def _decide_stk_query(
    state: DepositState, event: StkQueryResult, now_ms: int, timings: SagaTimings
) -> list[DepositEvent]:
    if state.status not in (Status.PENDING, Status.AWAITING_MPESA_CALLBACK):
        return []
    if event.checkout_request_id != state.checkout_request_id:
        return []
    if event.result_code == "0":
        return [MpesaPaid(now_ms, state.mpesa_receipt, _deriv_reference(state, 1))]
    code = stk_failure_code(event.result_code or "")
    if code is None:  # no answer yet, or a code nobody knows: not final either way
        if state.stk_queries >= timings.stk_queries_max:
            unknown = "" if event.result_code is None else f" (last: {event.result_code})"
            reason = f"M-Pesa never gave a final answer to the STK query{unknown}"
            return [ReviewNeeded(now_ms, reason)]
        return []  # the next query deadline asks again
    if state.paid_claimed:
        return _paid_claim_contradicted(state, event, now_ms)
    return [Failed(now_ms, code, f"M-Pesa {event.result_code}: {event.result_desc}")]


def _decide_stk_deadline(
    state: DepositState, now_ms: int, timings: SagaTimings
) -> list[DepositEvent]:
    if state.status not in (Status.PENDING, Status.AWAITING_MPESA_CALLBACK):
        return []
    if state.checkout_request_id is None:
        # The push call's own timeout is far shorter than this deadline: no answer
        # by now means it was lost. Without a CheckoutRequestID nothing can be
        # queried, so an operator settles it (a late callback is kept raw).
        return [ReviewNeeded(now_ms, "STK push outcome unknown and no callback arrived")]
    if state.stk_queries >= timings.stk_queries_max:
        return [ReviewNeeded(now_ms, "M-Pesa never gave a final answer to the STK query")]
    return [StkQueried(now_ms)]


def _decide_deriv_lookup(
    state: DepositState, event: DerivLookup, now_ms: int, timings: SagaTimings
) -> list[DepositEvent]:
    """Found: completed. A conflict: review. Absent long enough: a new attempt.

    A conflict is a row with our note but another amount or client. Only the
    agent writes an "Agent note", so it is our own transfer gone wrong, or an
    operator's: not the credit, and yet no proof that the credit is absent.
    Calling it absent would credit again under a new reference; an operator
    decides instead (the shillings wait in suspense).
    """
    if event.deriv_transaction_id is not None:
        return [Completed(now_ms, event.deriv_transaction_id)]
    if event.conflict is not None:
        return [ReviewNeeded(now_ms, f"Deriv statement conflict: {event.conflict}")]
    if state.deriv_lookups < timings.deriv_lookups_max:
        return []  # not there yet: look again after the settle interval
    if state.deriv_attempt < timings.deriv_attempts_max:
        return [DerivRetried(now_ms, _deriv_reference(state, state.deriv_attempt + 1))]
    return [ReviewNeeded(now_ms, "Deriv credit not found after every attempt")]


def _decide_refund_result(
    state: DepositState, event: B2CResult, now_ms: int, timings: SagaTimings
) -> list[DepositEvent]:
    if state.status is not Status.REVERSING:
        return []
    if event.result_code is None:
        return []  # status query had no answer yet; the b2c deadline asks again
    if event.result_code == "0":
        return [Refunded(now_ms, event.receipt)]
    if event.from_status_query and not event.payout_failed and (
        state.refund_conversation_id is not None
    ):
        return []  # M-Pesa took the refund but cannot show it yet: ask again, then review
    if event.from_status_query and not event.payout_failed:
        # M-Pesa knows no such payout: the request never reached it. Sending it again
        # with the same OriginatorConversationID is safe (Daraja refuses duplicates).
        if state.refund_queries >= timings.b2c_queries_max:
            return [ReviewNeeded(now_ms, "refund never reached M-Pesa")]
        return [RefundResent(now_ms)]
    reason = f"refund failed: M-Pesa {event.result_code} {event.result_desc}"
    if event.from_status_query or event.result_code in B2C_FINAL_FAILURES:
        return [RefundFailed(now_ms, reason)]
    # A failure that may not be final (see B2C_FINAL_FAILURES): M-Pesa's status decides.
    return [] if state.refund_unknown else [RefundUnknown(now_ms, reason)]


def _decide_resolve(state: DepositState, event: Resolve, now_ms: int) -> list[DepositEvent]:
    if state.status is not Status.NEEDS_REVIEW:
        raise ResolveRefused(f"transaction is {state.status}, not NEEDS_REVIEW")
    resolved = Resolved(now_ms, event.action, event.note, event.operator)
    match event.action:
        case "complete":
            if not _money_collected(state):
                raise ResolveRefused("cannot complete: M-Pesa payment was never confirmed")
            if state.refund_originator_id is not None:
                # Deriv refused the credit and the float hold went with the refund:
                # there is no credit to complete, and a refund may have paid.
                raise ResolveRefused("cannot complete: a refund was started; reverse it instead")
            return [resolved, Completed(now_ms, state.deriv_transaction_id or 0)]
        case "reverse":
            if not _money_collected(state):
                raise ResolveRefused("nothing to reverse: M-Pesa payment was never confirmed")
            return [resolved, _refund_started(state, "operator_reversed", event.note, now_ms)]
        case "fail":
            if _money_collected(state):
                raise ResolveRefused("cannot fail: M-Pesa collected the money; reverse it instead")
            return [resolved, Failed(now_ms, "operator_failed", event.note)]
    raise ResolveRefused(f"unknown action {event.action!r}")


# ----------------------------------------------------------------------- evolve


def _status(state: DepositState, status: Status, at_ms: int) -> DepositState:
    if state.status is status and state.history:
        return msgspec.structs.replace(state, updated_at_ms=at_ms)
    return msgspec.structs.replace(
        state,
        status=status,
        history=(*state.history, StatusChange(status, at_ms)),
        updated_at_ms=at_ms,
    )


def evolve(state: DepositState, event: DepositEvent) -> DepositState:
    r = msgspec.structs.replace
    match event:
        case Created():
            fresh = DepositState(
                transaction_id=event.transaction_id,
                user_id=event.user_id,
                phone=event.phone,
                deriv_login_id=event.deriv_login_id,
                quote=event.quote,
                callback_token=event.callback_token,
                created_at_ms=event.at_ms,
                stk_deadline_ms=event.stk_deadline_ms,
                float_holds_released=state.float_holds_released,
            )
            return _status(fresh, Status.PENDING, event.at_ms)
        case StkAccepted():
            state = r(
                state,
                merchant_request_id=event.merchant_request_id or state.merchant_request_id,
                checkout_request_id=event.checkout_request_id,
            )
            return _status(state, Status.AWAITING_MPESA_CALLBACK, event.at_ms)
        case StkUnknown():
            return r(state, stk_push_unknown=True, updated_at_ms=event.at_ms)
        case PaymentClaimed():
            return r(
                state, paid_claimed=True, mpesa_receipt=event.receipt, updated_at_ms=event.at_ms
            )
        case StkQueried():
            return r(state, stk_queries=state.stk_queries + 1, updated_at_ms=event.at_ms)
        case MpesaPaid():
            state = r(
                state,
                review_reason=None,
                mpesa_receipt=event.receipt or state.mpesa_receipt,
                deriv_reference=event.deriv_reference,
                deriv_sent_at_ms=event.at_ms,
                deriv_attempt=1,
                deriv_deferrals=0,
                deriv_resend_at_ms=None,
            )
            return _status(state, Status.AWAITING_DERIV_CONFIRMATION, event.at_ms)
        case Failed():
            state = r(state, failure=Failure(event.code, event.detail))
            return _status(state, Status.FAILED, event.at_ms)
        case DerivCreditUnknown():
            return r(
                state, deriv_unknown=True, deriv_lookups=0, deriv_resend_at_ms=None,
                updated_at_ms=event.at_ms,
            )
        case DerivCreditDeferred():
            return r(
                state, deriv_deferrals=state.deriv_deferrals + 1,
                deriv_resend_at_ms=event.resend_at_ms, updated_at_ms=event.at_ms,
            )
        case DerivCreditResent():
            return r(state, deriv_resend_at_ms=None, updated_at_ms=event.at_ms)
        case DerivLookedUp():
            return r(state, deriv_lookups=state.deriv_lookups + 1, updated_at_ms=event.at_ms)
        case DerivRetried():
            return r(
                state,
                deriv_reference=event.reference,
                deriv_sent_at_ms=event.at_ms,
                deriv_attempt=state.deriv_attempt + 1,
                deriv_unknown=False,
                deriv_lookups=0,
                deriv_deferrals=0,
                deriv_resend_at_ms=None,
                updated_at_ms=event.at_ms,
            )
        case Completed():
            state = r(
                state,
                deriv_transaction_id=event.deriv_transaction_id or state.deriv_transaction_id,
                deriv_unknown=False,
                deriv_resend_at_ms=None,
                in_suspense=False,
                review_reason=None,
            )
            return _status(state, Status.COMPLETED, event.at_ms)
        case RefundStarted():
            if event.attempt != state.refund_attempt:  # a new request: nothing known of it yet
                state = r(
                    state, refund_conversation_id=None, refund_unknown=False, refund_queries=0
                )
            state = r(
                state,
                refund_originator_id=event.originator_conversation_id,
                refund_attempt=event.attempt,
                refund_failed=False,
                failure=Failure(event.reason_code, event.detail),
                deriv_unknown=False,
                deriv_resend_at_ms=None,
                in_suspense=False,
                review_reason=None,
            )
            return _status(state, Status.REVERSING, event.at_ms)
        case RefundAccepted():
            return r(state, refund_conversation_id=event.conversation_id, updated_at_ms=event.at_ms)
        case RefundUnknown():
            return r(state, refund_unknown=True, updated_at_ms=event.at_ms)
        case RefundQueried():
            return r(state, refund_queries=state.refund_queries + 1, updated_at_ms=event.at_ms)
        case RefundResent():
            return r(state, refund_queries=state.refund_queries + 1, updated_at_ms=event.at_ms)
        case Refunded():
            return _status(r(state, refund_receipt=event.receipt), Status.REVERSED, event.at_ms)
        case ReviewQueried():
            return r(state, review_queries=state.review_queries + 1, updated_at_ms=event.at_ms)
        case ReviewNeeded() | RefundFailed():
            parked = _money_collected(state)
            cycles = state.suspensions + (1 if parked and not state.in_suspense else 0)
            failed = state.refund_failed or isinstance(event, RefundFailed)
            state = r(
                state, review_reason=event.reason, in_suspense=parked, suspensions=cycles,
                refund_failed=failed,
            )
            return _status(state, Status.NEEDS_REVIEW, event.at_ms)
        case Resolved():
            return r(state, updated_at_ms=event.at_ms)
        case FloatHoldReleased():
            return r(state, float_holds_released=state.float_holds_released + 1)
    raise TypeError(f"not a deposit event: {event!r}")


# ------------------------------------------------------------------------ react


def react(
    before: DepositState, event: DepositEvent, after: DepositState, timings: SagaTimings
) -> list[Command]:
    """What to do because ``event`` was just persisted."""
    commands: list[Command] = []
    match event:
        case Created():
            assert after.quote is not None
            commands += [
                StartStkPush(
                    phone=after.phone,
                    amount_kes=after.quote.kes_cents // 100,
                    account_reference=short_reference(after.transaction_id),
                    callback_token=after.callback_token,
                ),
                SetTimer("stk", after.stk_deadline_ms),
            ]
        case StkAccepted() if before.status is Status.NEEDS_REVIEW:
            # Taken up again from review (a late callback): the query loop's timer.
            commands.append(SetTimer("stk", event.at_ms + timings.stk_query_interval_ms))
        case PaymentClaimed() | StkQueried():
            assert after.checkout_request_id is not None
            commands.append(QueryStk(after.checkout_request_id))
            if isinstance(event, StkQueried):
                commands.append(SetTimer("stk", event.at_ms + timings.stk_query_interval_ms))
        case MpesaPaid():
            assert after.deriv_reference is not None and after.quote is not None
            commands += [
                PostLedger(_collected(after)),
                CreditDeriv(after.deriv_login_id, after.quote.usd_cents, after.deriv_reference),
            ]
        case DerivRetried() | DerivCreditResent():
            assert after.deriv_reference is not None and after.quote is not None
            commands.append(
                CreditDeriv(after.deriv_login_id, after.quote.usd_cents, after.deriv_reference)
            )
        case DerivCreditDeferred():
            commands.append(SetTimer("deriv_resend", event.resend_at_ms))
        case DerivCreditUnknown() | DerivLookedUp():
            lookup_at_ms = event.at_ms + timings.deriv_lookup_interval_ms
            commands += [
                _find_credit(after, event.reference),
                SetTimer("deriv_lookup", lookup_at_ms),
            ]
        case Completed():
            if before.in_suspense:
                commands.append(PostLedger(_unsuspend(after)))
            commands += [PostLedger(_fx(after)), PostLedger(_post_hold(after))]
        case Failed():
            commands.append(PostLedger(_void_hold(after)))
        case RefundStarted():
            if before.in_suspense:
                commands.append(PostLedger(_unsuspend(after)))
            commands += [
                PostLedger(_void_hold(after)),
                _refund_payout(after),
                SetTimer("b2c", event.at_ms + timings.b2c_result_ms),
            ]
        case RefundResent():
            result_by_ms = event.at_ms + timings.b2c_result_ms
            commands += [_refund_payout(after), SetTimer("b2c", result_by_ms)]
        case RefundUnknown():
            assert after.refund_originator_id is not None
            commands.append(QueryB2C(after.refund_originator_id, after.callback_token))
        case RefundQueried():
            assert after.refund_originator_id is not None
            commands += [
                QueryB2C(after.refund_originator_id, after.callback_token),
                SetTimer("b2c", event.at_ms + timings.b2c_result_ms),
            ]
        case Refunded():
            commands.append(PostLedger(_refunded(after)))
        case ReviewNeeded() | RefundFailed():
            if after.in_suspense and not before.in_suspense:
                commands.append(PostLedger(_suspend(after)))
            if _awaits_mpesa_answer(after):
                at_ms = event.at_ms + timings.stk_review_query_interval_ms
                commands.append(SetTimer("stk_review", at_ms))
        case ReviewQueried():
            assert after.checkout_request_id is not None
            at_ms = event.at_ms + timings.stk_review_query_interval_ms
            commands += [QueryStk(after.checkout_request_id), SetTimer("stk_review", at_ms)]
    if after.status is not before.status:
        commands.append(Notify(after.status))
    return commands


def _find_credit(state: DepositState, reference: str) -> FindDerivTransfer:
    """The statement lookup for a credit: its note, amount and client must all match."""
    assert state.quote is not None
    since_ms = state.deriv_sent_at_ms or state.created_at_ms
    return FindDerivTransfer(reference, state.quote.usd_cents, state.deriv_login_id, since_ms)


def _refund_payout(state: DepositState) -> PayB2C:
    assert state.refund_originator_id is not None and state.quote is not None
    return PayB2C(
        originator_conversation_id=state.refund_originator_id,
        phone=state.phone,
        amount_kes=state.quote.kes_cents // 100,
        remarks="PenPay deposit refund",
        callback_token=state.callback_token,
    )


def ledger_so_far(state: DepositState) -> list[Posting]:
    """Every posting ``state`` implies, in the order they were first issued.

    Recovery re-issues them all (each is idempotent by name), which repairs
    a crash between persisting a step and booking it, terminal steps included.
    """
    if not state.started:
        return []
    assert state.quote is not None
    postings = [float_hold(state.quote, state.float_holds_released)]
    if _money_collected(state):
        postings.append(_collected(state))
    for cycle in range(1, state.suspensions + 1):
        at = msgspec.structs.replace(state, suspensions=cycle)
        postings.append(_suspend(at))
        if cycle < state.suspensions or not state.in_suspense:
            postings.append(_unsuspend(at))
    match state.status:
        case Status.COMPLETED:
            postings += [_fx(state), _post_hold(state)]
        case Status.FAILED | Status.REVERSING:
            postings.append(_void_hold(state))
        case Status.REVERSED:
            postings += [_void_hold(state), _refunded(state)]
    return postings


def recover(
    state: DepositState, now_ms: int, timings: SagaTimings
) -> tuple[list[DepositEvent], list[Command]]:
    """What was in flight when the actor stopped: re-derived, never resent blindly.

    Returns events to persist first (a call that may have been in flight is
    now of unknown outcome) and commands to run: every posting the state
    implies (idempotent), the deadlines, and for a money-moving call whose
    answer was lost, a reconciliation query.
    """
    if not state.started:
        return [], []
    ledger: list[Command] = [PostLedger(p) for p in ledger_so_far(state)]
    match state.status:
        case Status.PENDING if state.checkout_request_id is None and not state.stk_push_unknown:
            # The push may have reached Daraja; only its callback can tell us now.
            unknown = StkUnknown(now_ms, "actor restarted before Daraja answered")
            return [unknown], [*ledger, SetTimer("stk", max(state.stk_deadline_ms, now_ms))]
        case Status.PENDING | Status.AWAITING_MPESA_CALLBACK:
            return [], [*ledger, SetTimer("stk", max(state.stk_deadline_ms, now_ms))]
        case Status.AWAITING_DERIV_CONFIRMATION:
            assert state.deriv_reference is not None
            if state.deriv_resend_at_ms is not None:
                # Refused for now, and no call went out since: the resend still waits.
                at_ms = max(state.deriv_resend_at_ms, now_ms)
                return [], [*ledger, SetTimer("deriv_resend", at_ms)]
            if state.deriv_unknown:
                return [], [
                    *ledger,
                    _find_credit(state, state.deriv_reference),
                    SetTimer("deriv_lookup", now_ms + timings.deriv_lookup_interval_ms),
                ]
            # The credit call may or may not have gone out: look it up, never resend.
            unknown_credit = DerivCreditUnknown(now_ms, state.deriv_reference, "actor restarted")
            return [unknown_credit], ledger
        case Status.REVERSING:
            assert state.refund_originator_id is not None
            if state.refund_conversation_id is None and not state.refund_unknown:
                ledger.append(_refund_payout(state))  # safe: same OriginatorConversationID
            else:
                ledger.append(QueryB2C(state.refund_originator_id, state.callback_token))
            ledger.append(SetTimer("b2c", now_ms + timings.b2c_result_ms))
            return [], ledger
        case Status.NEEDS_REVIEW if _awaits_mpesa_answer(state):
            at_ms = now_ms + timings.stk_review_query_interval_ms
            return [], [*ledger, SetTimer("stk_review", at_ms)]
    return [], ledger
