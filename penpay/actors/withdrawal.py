"""The withdrawal flow: USD from the user's Deriv account, then KES by M-Pesa B2C.

A pure state machine (see :mod:`penpay.actors.saga`). Happy path::

    PENDING --withdraw sent--> AWAITING_DERIV_CONFIRMATION --agent credited-->
    AWAITING_MPESA_DISBURSEMENT --B2C paid--> COMPLETED

``Created`` records PENDING and, in the same instant, AWAITING_DERIV_CONFIRMATION:
its reaction is the ``paymentagent_withdraw`` call. If Deriv refuses (a bad or
expired verification code, limits) or the withdrawal provably never happened,
the transaction ends in FAILED: nothing moved. A refusal "for now" (rate
limit, "Request too frequent", maintenance) is sent again after a back-off,
under the same reference (so is the transfer back while REVERSING); one that
outlasts every resend fails the withdrawal (the return: review). Once the USD
is with the agent, a B2C payout that M-Pesa refuses or fails sends the USD
back to the user's Deriv account (``paymentagent_transfer``): REVERSING, then
REVERSED. An outcome nobody can establish ends in NEEDS_REVIEW, with the money
in suspense until an operator resolves it.

The verification code is a credential: no event carries it. ``react`` issues
:class:`~penpay.actors.saga.WithdrawFromDeriv` with an empty
``verification_code``; the actor shell fills in the code it holds in memory
from the :class:`Start` message (its ``fill_secret`` hook), once. A withdrawal
Deriv refused "for now" is resent with an empty code as well: the Deriv
gateway actor keeps the code of such a withdrawal in memory and fills it in.
A call that may have gone out (a restart, a lost answer) is never resent: it
is only ever looked up on the agent's statement, by the reference in ``Created``.

Ledger, for a withdrawal of ``U`` USD paid out as ``K`` KES (see doc/ledger.md),
with ``at_mid = K + spread + rounding`` (see :mod:`penpay.actors.fx`):

- ``deriv_received`` when Deriv confirms: ``deriv_float -> customer_in_transit_usd``
  U (read ``a -> b`` as debit ``a``, credit ``b``);
- ``fx_conversion``, one linked group posted with it:
  ``customer_in_transit_usd -> fx_position_usd`` U, and ``fx_position_kes`` at mid
  to ``customer_in_transit_kes`` K, ``fx_spread_revenue_kes`` and ``rounding_kes``;
- ``mpesa_paid_out`` once B2C has paid: ``customer_in_transit_kes -> mpesa_float`` K;
- reversal: ``fx_reversal`` (the exact mirror of ``fx_conversion``), then
  ``deriv_returned``: ``customer_in_transit_usd -> deriv_float`` U once Deriv
  confirms the transfer back;
- review: ``suspense_in`` parks K (``customer_in_transit_kes -> suspense_kes``)
  when the payout's outcome is unknown, ``suspense_in_usd_<n>`` parks U
  (``customer_in_transit_usd -> suspense_usd``) when the return is; the
  matching ``suspense_out`` / ``suspense_out_usd_<n>`` releases it on resolution;
- paid twice: M-Pesa pays the payout after the USD began going back to Deriv
  (an operator reversed a withdrawal whose payout was unknown). The shillings
  left the float all the same: ``mpesa_paid_after_return``
  (``suspense_kes -> mpesa_float``) K, a debit in suspense that stands for
  what the user now owes, until an operator recovers it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from penpay.actors.deposit import DUPLICATE_ORIGINATOR
from penpay.actors.fx import Quote
from penpay.actors.saga import (
    B2C_FINAL_FAILURES,
    TERMINAL,
    Account,
    Alert,
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
    FindDerivWithdrawal,
    Input,
    Leg,
    Notify,
    PayB2C,
    Posting,
    PostingKind,
    PostLedger,
    QueryB2C,
    Resolve,
    ResolveRefused,
    SagaTimings,
    SetTimer,
    Status,
    StatusChange,
    WithdrawFromDeriv,
    deriv_resend_delay_ms,
    kes_posting,
)
from penpay.money import Currency

#: Deriv's answers to a verification code that is wrong, expired, used or another user's.
CODE_REJECTIONS = frozenset({"InvalidToken", "BadSession"})

# ------------------------------------------------------------------------ state


class WithdrawalState(msgspec.Struct, frozen=True, kw_only=True):
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
    deriv_reference: str | None = None  # the withdrawal's description on Deriv
    deriv_unknown: bool = False
    deriv_lookups: int = 0
    #: How often Deriv refused the current Deriv call "for now" (DerivRetryLater):
    #: the withdrawal, or while REVERSING the transfer back.
    deriv_deferrals: int = 0
    #: When that call is sent again; None: no resend waits. A value means the
    #: last call under the reference did nothing and none is in flight.
    deriv_resend_at_ms: int | None = None
    deriv_transaction_id: int | None = None  # set once the USD is with the agent
    payout_originator_id: str | None = None
    payout_conversation_id: str | None = None
    payout_unknown: bool = False
    payout_queries: int = 0
    mpesa_receipt: str | None = None
    fx_reversed: bool = False  # the shillings were converted back for the return
    return_reference: str | None = None
    #: When the transfer back under ``return_reference`` was first sent (its lookups
    #: read the statement from there).
    return_sent_at_ms: int = 0
    return_attempt: int = 0
    return_unknown: bool = False
    return_lookups: int = 0
    return_transaction_id: int | None = None
    failure: Failure | None = None
    review_reason: str | None = None
    in_suspense: bool = False
    kes_parked: bool = False  # the payout's shillings went to suspense (at most once)
    usd_parks: int = 0  # how often the returning USD went to suspense
    #: M-Pesa paid the payout after the USD began going back: the user was paid twice.
    paid_after_return: bool = False

    @property
    def started(self) -> bool:
        return self.quote is not None

    @property
    def withdrawn(self) -> bool:
        """Deriv moved the user's USD to the agent; from here on it is owed to the user."""
        return self.deriv_transaction_id is not None


# ----------------------------------------------------------------------- events


class WithdrawalEvent(msgspec.Struct, frozen=True):
    at_ms: int


class Created(WithdrawalEvent, frozen=True, tag="withdrawal.created"):
    transaction_id: str
    user_id: str
    phone: str
    deriv_login_id: str
    quote: Quote
    callback_token: str
    deriv_reference: str  # persisted before the Deriv call that carries it


class Failed(WithdrawalEvent, frozen=True, tag="withdrawal.failed"):
    code: str
    detail: str


class DerivWithdrawUnknown(WithdrawalEvent, frozen=True, tag="withdrawal.deriv_unknown"):
    reference: str
    reason: str


class DerivLookedUp(WithdrawalEvent, frozen=True, tag="withdrawal.deriv_looked_up"):
    reference: str


class DerivDeferred(WithdrawalEvent, frozen=True, tag="withdrawal.deriv_deferred"):
    """Deriv refused the withdrawal (or the return) for now, before doing
    anything: it is sent again at ``resend_at_ms``."""

    reference: str
    reason: str
    resend_at_ms: int


class DerivResent(WithdrawalEvent, frozen=True, tag="withdrawal.deriv_resent"):
    """The deferred call goes out again under the same reference."""

    reference: str


class DerivReceived(WithdrawalEvent, frozen=True, tag="withdrawal.deriv_received"):
    deriv_transaction_id: int
    originator_conversation_id: str  # persisted before the B2C call that carries it


class PayoutAccepted(WithdrawalEvent, frozen=True, tag="withdrawal.payout_accepted"):
    conversation_id: str


class PayoutUnknown(WithdrawalEvent, frozen=True, tag="withdrawal.payout_unknown"):
    reason: str


class PayoutQueried(WithdrawalEvent, frozen=True, tag="withdrawal.payout_queried"):
    pass


class PayoutResent(WithdrawalEvent, frozen=True, tag="withdrawal.payout_resent"):
    pass


class Completed(WithdrawalEvent, frozen=True, tag="withdrawal.completed"):
    receipt: str | None


class ReturnStarted(WithdrawalEvent, frozen=True, tag="withdrawal.return_started"):
    reason_code: str
    detail: str
    reference: str  # the transfer back's description on Deriv


class ReturnUnknown(WithdrawalEvent, frozen=True, tag="withdrawal.return_unknown"):
    reference: str
    reason: str


class ReturnLookedUp(WithdrawalEvent, frozen=True, tag="withdrawal.return_looked_up"):
    reference: str


class ReturnRetried(WithdrawalEvent, frozen=True, tag="withdrawal.return_retried"):
    """The previous transfer back provably moved nothing; a new reference is used."""

    reference: str


class Returned(WithdrawalEvent, frozen=True, tag="withdrawal.returned"):
    deriv_transaction_id: int


class PaidAfterReturn(WithdrawalEvent, frozen=True, tag="withdrawal.paid_after_return"):
    """M-Pesa paid the payout although the USD had begun going back to Deriv."""

    receipt: str | None


class ReviewNeeded(WithdrawalEvent, frozen=True, tag="withdrawal.review_needed"):
    reason: str


class Resolved(WithdrawalEvent, frozen=True, tag="withdrawal.resolved"):
    action: str
    note: str
    operator: str


EVENT_TYPES: tuple[type[WithdrawalEvent], ...] = (
    Created, Failed, DerivWithdrawUnknown, DerivLookedUp, DerivReceived, PayoutAccepted,
    PayoutUnknown, PayoutQueried, PayoutResent, Completed, ReturnStarted, ReturnUnknown,
    ReturnLookedUp, ReturnRetried, Returned, ReviewNeeded, Resolved, DerivDeferred, DerivResent,
    PaidAfterReturn,
)


class Start(Input, frozen=True, tag="withdrawal_start"):
    """The request. ``verification_code`` stays in the shell's memory, never in an event."""

    transaction_id: str
    user_id: str
    phone: str
    deriv_login_id: str
    quote: Quote
    callback_token: str
    verification_code: str

    def __repr__(self) -> str:
        # Inputs get logged; the code is a credential.
        return (
            f"Start(transaction_id={self.transaction_id!r}, user_id={self.user_id!r}, "
            f"deriv_login_id={self.deriv_login_id!r}, verification_code=<not shown>)"
        )

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [
            ("transaction_id", self.transaction_id),
            ("user_id", self.user_id),
            ("deriv_login_id", self.deriv_login_id),
            ("verification_code", "<not shown>"),
        ]


# --------------------------------------------------------------------- postings


def _usd_posting(name: str, debit: Account, credit: Account, amount_cents: int) -> Posting:
    leg = Leg(debit, credit, amount_cents, Currency.USD)
    return Posting(name=name, kind=PostingKind.POSTED, legs=(leg,))


def _quote(state: WithdrawalState) -> Quote:
    assert state.quote is not None
    return state.quote


def _received(state: WithdrawalState) -> Posting:
    usd = _quote(state).usd_cents
    return _usd_posting("deriv_received", Account.DERIV_FLOAT, Account.IN_TRANSIT_USD, usd)


def _fx_legs(q: Quote) -> list[Leg]:
    kes, usd = Currency.KES, Currency.USD
    legs = [
        Leg(Account.IN_TRANSIT_USD, Account.FX_POSITION_USD, q.usd_cents, usd),
        Leg(Account.FX_POSITION_KES, Account.IN_TRANSIT_KES, q.kes_cents, kes),
    ]
    if q.spread_cents:
        legs.append(Leg(Account.FX_POSITION_KES, Account.SPREAD_REVENUE_KES, q.spread_cents, kes))
    if q.rounding_cents:
        legs.append(Leg(Account.FX_POSITION_KES, Account.ROUNDING_KES, q.rounding_cents, kes))
    return legs


def _fx(state: WithdrawalState) -> Posting:
    legs = tuple(_fx_legs(_quote(state)))
    return Posting(name="fx_conversion", kind=PostingKind.POSTED, legs=legs)


def _fx_reversal(state: WithdrawalState) -> Posting:
    """Every leg of ``fx_conversion`` turned round, so the user gets all of U back."""
    legs = tuple(
        Leg(leg.credit, leg.debit, leg.amount_cents, leg.currency)
        for leg in _fx_legs(_quote(state))
    )
    return Posting(name="fx_reversal", kind=PostingKind.POSTED, legs=legs)


def _paid_out(state: WithdrawalState) -> Posting:
    kes = _quote(state).kes_cents
    return kes_posting("mpesa_paid_out", Account.IN_TRANSIT_KES, Account.MPESA_FLOAT, kes)


def _returned(state: WithdrawalState) -> Posting:
    usd = _quote(state).usd_cents
    return _usd_posting("deriv_returned", Account.IN_TRANSIT_USD, Account.DERIV_FLOAT, usd)


def _paid_after_return(state: WithdrawalState) -> Posting:
    """The payout M-Pesa made although the USD went back: owed by the user, in suspense."""
    kes = _quote(state).kes_cents
    name = "mpesa_paid_after_return"
    return kes_posting(name, Account.SUSPENSE_KES, Account.MPESA_FLOAT, kes)


def _park_kes(state: WithdrawalState, *, out: bool = False) -> Posting:
    kes = _quote(state).kes_cents
    if out:
        return kes_posting("suspense_out", Account.SUSPENSE_KES, Account.IN_TRANSIT_KES, kes)
    return kes_posting("suspense_in", Account.IN_TRANSIT_KES, Account.SUSPENSE_KES, kes)


def _park_usd(state: WithdrawalState, n: int, *, out: bool = False) -> Posting:
    # Numbered: a return can fail, be retried by an operator and fail again, and a
    # reused name would make the second parking an idempotent no-op.
    usd = _quote(state).usd_cents
    if out:
        name = f"suspense_out_usd_{n}"
        return _usd_posting(name, Account.SUSPENSE_USD, Account.IN_TRANSIT_USD, usd)
    return _usd_posting(f"suspense_in_usd_{n}", Account.IN_TRANSIT_USD, Account.SUSPENSE_USD, usd)


def _suspend(state: WithdrawalState) -> Posting:
    """Park what is in transit now: the USD once it is on its way back, else the KES."""
    return _park_usd(state, state.usd_parks) if state.fx_reversed else _park_kes(state)


def _unsuspend(state: WithdrawalState) -> Posting:
    if state.fx_reversed:
        return _park_usd(state, state.usd_parks, out=True)
    return _park_kes(state, out=True)


def ledger_so_far(state: WithdrawalState) -> list[Posting]:
    """Every posting ``state`` implies, in the order they were first issued.

    Recovery re-issues them all: each is idempotent by transfer id, and the
    original order keeps every account's balance valid on the way. The one
    exception, ``mpesa_paid_after_return``, comes last wherever it came: it
    touches only KES accounts, and no step after the FX reversal does.
    """
    if not state.withdrawn:
        return []
    postings = [_received(state), _fx(state)]
    if state.kes_parked:
        postings.append(_park_kes(state))
        if not (state.in_suspense and not state.fx_reversed):
            postings.append(_park_kes(state, out=True))
    if state.fx_reversed:
        postings.append(_fx_reversal(state))
    for n in range(1, state.usd_parks + 1):
        postings.append(_park_usd(state, n))
        if not (state.in_suspense and n == state.usd_parks):
            postings.append(_park_usd(state, n, out=True))
    if state.status is Status.COMPLETED:
        postings.append(_paid_out(state))
    if state.status is Status.REVERSED:
        postings.append(_returned(state))
    if state.paid_after_return:
        postings.append(_paid_after_return(state))
    return postings


# ----------------------------------------------------------------------- decide


def _deriv_reference(transaction_id: str) -> str:
    # Deriv's description allows [0-9A-Za-z .,'-]; the full id makes the statement
    # lookup unambiguous. One attempt only: the code is single-use and not kept.
    return f"PenPay withdrawal {transaction_id}"


def _return_reference(state: WithdrawalState, attempt: int) -> str:
    return f"PenPay withdrawal reversal {state.transaction_id} attempt {attempt}"


def payout_originator(transaction_id: str) -> str:
    """The B2C ``OriginatorConversationID``: one per withdrawal, reused on every resend."""
    return f"PPW{transaction_id.replace('-', '')}"


def decide(
    state: WithdrawalState, event: Input, now_ms: int, timings: SagaTimings
) -> list[WithdrawalEvent]:
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
                    deriv_reference=_deriv_reference(event.transaction_id),
                )
            ]
        case Resolve():
            return _decide_resolve(state, event, now_ms)
        case B2CResult() if _paid_after_return_news(state, event):
            return [PaidAfterReturn(now_ms, event.receipt)]
    if state.status is Status.NEEDS_REVIEW:
        return _decide_parked(state, event, now_ms)
    if not state.started or state.status in TERMINAL:
        return []
    match state.status:
        case Status.PENDING | Status.AWAITING_DERIV_CONFIRMATION:
            return _decide_withdraw(state, event, now_ms, timings)
        case Status.AWAITING_MPESA_DISBURSEMENT:
            return _decide_payout(state, event, now_ms, timings)
        case Status.REVERSING:
            return _decide_return(state, event, now_ms, timings)
    return []


def _paid_after_return_news(state: WithdrawalState, event: B2CResult) -> bool:
    """M-Pesa says it paid our payout, after the USD began going back to Deriv.

    Whatever the status (REVERSING, REVERSED, or parked with the return in
    doubt), the shillings have left the float and the USD cannot be taken
    back without the user: the double payment is booked and raised at once.
    """
    return (
        state.fx_reversed and not state.paid_after_return
        and event.result_code == "0"
        and state.payout_originator_id is not None
        and event.originator_conversation_id == state.payout_originator_id
    )


def _decide_parked(state: WithdrawalState, event: Input, now_ms: int) -> list[WithdrawalEvent]:
    """In review, only M-Pesa saying it paid the payout settles the withdrawal by itself.

    A payout whose outcome was unknown may still be paid (a late result or
    status answer): the shillings left, so the withdrawal is complete, and
    an operator must not be left to send the USD back as well. Once the
    return to Deriv has begun, such news is for the operator.
    """
    if (
        isinstance(event, B2CResult) and event.result_code == "0"
        and state.payout_originator_id is not None
        and event.originator_conversation_id == state.payout_originator_id
        and not state.fx_reversed
    ):
        return [Completed(now_ms, event.receipt)]
    return []


def _decide_withdraw(
    state: WithdrawalState, event: Input, now_ms: int, timings: SagaTimings
) -> list[WithdrawalEvent]:
    ours = state.deriv_reference
    match event:
        case DerivCredited() if event.reference == ours:
            return [_received_event(state, event.deriv_transaction_id, now_ms)]
        case DerivRejected() if event.reference == ours:
            bad_code = event.code in CODE_REJECTIONS
            code = "verification_code_invalid" if bad_code else "deriv_rejected"
            return [Failed(now_ms, code, f"{event.code}: {event.message}")]
        case DerivUnknown() if event.reference == ours and not state.deriv_unknown:
            return [DerivWithdrawUnknown(now_ms, event.reference, event.reason)]
        case DerivLookup() if event.reference == ours and state.deriv_unknown:
            return _decide_withdraw_lookup(state, event, now_ms, timings)
        case Deadline(name="deriv_lookup") if state.deriv_unknown:
            return [DerivLookedUp(now_ms, ours or "")]
        case DerivRetryLater() if event.reference == ours:
            detail = "Deriv kept refusing the withdrawal for now; request a new code and retry"
            give_up = Failed(now_ms, "deriv_unavailable", f"{detail} ({event.code})")
            return _decide_deferral(state, event, state.deriv_unknown, give_up, now_ms, timings)
        case Deadline(name="deriv_resend") if state.deriv_resend_at_ms is not None:
            return [DerivResent(now_ms, ours or "")]
    return []


def _decide_withdraw_lookup(
    state: WithdrawalState, event: DerivLookup, now_ms: int, timings: SagaTimings
) -> list[WithdrawalEvent]:
    """Found: the USD is with the agent. Absent long enough: failed, nothing moved.

    A conflict (a row with our "Client note" but another amount or another
    client) counts as absent, not as review: the note is the client's free
    text, so anyone can write our reference on their own withdrawal to the
    agent, and it is no sign of ours. Review would not help either: at this
    stage an operator can only fail the withdrawal (``complete`` needs the
    USD to have moved), which is what "absent" comes to anyway.
    """
    if event.deriv_transaction_id is not None:
        return [_received_event(state, event.deriv_transaction_id, now_ms)]
    if state.deriv_lookups < timings.deriv_lookups_max:
        return []  # not there yet: look again after the settle interval
    # Provably nothing moved. The code cannot be reused (we never kept it):
    # the user asks for a new one.
    detail = "Deriv has no record of the withdrawal; request a new code and retry"
    return [Failed(now_ms, "deriv_withdrawal_not_made", detail)]


def _decide_deferral(
    state: WithdrawalState,
    event: DerivRetryLater,
    unknown: bool,
    give_up: WithdrawalEvent,
    now_ms: int,
    timings: SagaTimings,
) -> list[WithdrawalEvent]:
    """Deriv refused the current call for now, before doing anything: resend it later.

    The same reference is kept: nothing was done under it. Ignored while a
    call under it has an ``unknown`` outcome (the statement settles that one)
    or a resend already waits (a duplicate). After ``deriv_resends_max``
    refused resends, ``give_up``: every call under the reference did nothing.
    """
    if unknown or state.deriv_resend_at_ms is not None:
        return []
    if state.deriv_deferrals >= timings.deriv_resends_max:
        return [give_up]
    delay_ms = deriv_resend_delay_ms(timings, state.deriv_deferrals, event.reference)
    reason = f"{event.code}: {event.message}"
    return [DerivDeferred(now_ms, event.reference, reason, now_ms + delay_ms)]


def _received_event(
    state: WithdrawalState, deriv_transaction_id: int, now_ms: int
) -> DerivReceived:
    return DerivReceived(now_ms, deriv_transaction_id, payout_originator(state.transaction_id))


def _decide_payout(
    state: WithdrawalState, event: Input, now_ms: int, timings: SagaTimings
) -> list[WithdrawalEvent]:
    ours = state.payout_originator_id
    match event:
        case B2CAccepted() if event.originator_conversation_id == ours:
            if state.payout_conversation_id == event.conversation_id:
                return []  # duplicate
            return [PayoutAccepted(now_ms, event.conversation_id)]
        case B2CRejected() if event.originator_conversation_id == ours:
            if event.error_code == DUPLICATE_ORIGINATOR:
                # Daraja already has this payout (we resent after a restart): ask its status.
                if state.payout_unknown:
                    return []
                return [PayoutUnknown(now_ms, "M-Pesa already holds this payout request")]
            if state.payout_conversation_id is not None or state.payout_unknown:
                # M-Pesa accepted a request with this id, or may have: this refusal
                # (of a resend, say a spike arrest) proves nothing about that one,
                # which may still pay. Its status decides, as for a lost answer.
                return []
            detail = f"{event.error_code}: {event.message}"
            return [_return_started(state, "mpesa_payout_rejected", detail, now_ms)]
        case B2CUnknown() if event.originator_conversation_id == ours and not state.payout_unknown:
            return [PayoutUnknown(now_ms, event.reason)]
        case B2CResult() if event.originator_conversation_id == ours:
            return _decide_payout_result(state, event, now_ms, timings)
        case Deadline(name="b2c"):
            if state.payout_queries >= timings.b2c_queries_max:
                return [ReviewNeeded(now_ms, "payout outcome unknown after status queries")]
            return [PayoutQueried(now_ms)]
    return []


def _decide_payout_result(
    state: WithdrawalState, event: B2CResult, now_ms: int, timings: SagaTimings
) -> list[WithdrawalEvent]:
    if event.result_code is None:
        return []  # status query had no answer yet; the b2c deadline asks again
    if event.result_code == "0":
        return [Completed(now_ms, event.receipt)]
    if not event.from_status_query and event.result_code not in B2C_FINAL_FAILURES:
        # A failure that may not be final: the USD goes back only once a query says so.
        return [] if state.payout_unknown else [
            PayoutUnknown(now_ms, f"M-Pesa {event.result_code}: {event.result_desc}")
        ]
    if event.from_status_query and not event.payout_failed:
        if state.payout_conversation_id is not None:
            # M-Pesa took the request but cannot show it yet: it may still pay, so
            # nothing goes back to Deriv; the b2c deadline asks again, then review.
            return []
        # M-Pesa knows no such payout: the request never reached it. Sending it again
        # with the same OriginatorConversationID is safe (Daraja refuses duplicates).
        if state.payout_queries >= timings.b2c_queries_max:
            return [ReviewNeeded(now_ms, "payout never reached M-Pesa")]
        return [PayoutResent(now_ms)]
    detail = f"M-Pesa {event.result_code}: {event.result_desc}"
    return [_return_started(state, "mpesa_payout_failed", detail, now_ms)]


def _return_started(
    state: WithdrawalState, reason_code: str, detail: str, now_ms: int
) -> ReturnStarted:
    return ReturnStarted(now_ms, reason_code, detail, _return_reference(state, 1))


def _decide_return(
    state: WithdrawalState, event: Input, now_ms: int, timings: SagaTimings
) -> list[WithdrawalEvent]:
    ours = state.return_reference
    match event:
        case DerivCredited() if event.reference == ours:
            return [Returned(now_ms, event.deriv_transaction_id)]
        case DerivRejected() if event.reference == ours:
            # A refusal is unlikely to change on retry (account closed, limits), and an
            # explicit error can still mean money moved (TransferReceiveFailed).
            return [ReviewNeeded(now_ms, f"return refused by Deriv: {event.code}")]
        case DerivUnknown() if event.reference == ours and not state.return_unknown:
            return [ReturnUnknown(now_ms, event.reference, event.reason)]
        case DerivLookup() if event.reference == ours and state.return_unknown:
            if event.deriv_transaction_id is not None:
                return [Returned(now_ms, event.deriv_transaction_id)]
            if event.conflict is not None:
                # Only the agent writes an "Agent note": a row with ours but another
                # amount or client is our own transfer gone wrong, not proof of absence.
                return [ReviewNeeded(now_ms, f"Deriv statement conflict: {event.conflict}")]
            if state.return_lookups < timings.deriv_lookups_max:
                return []
            if state.return_attempt < timings.deriv_attempts_max:
                attempt = state.return_attempt + 1
                return [ReturnRetried(now_ms, _return_reference(state, attempt))]
            return [ReviewNeeded(now_ms, "return to Deriv not found after every attempt")]
        case Deadline(name="deriv_lookup") if state.return_unknown:
            return [ReturnLookedUp(now_ms, ours or "")]
        case DerivRetryLater() if event.reference == ours:
            give_up = ReviewNeeded(now_ms, f"return refused for now by Deriv: {event.code}")
            return _decide_deferral(state, event, state.return_unknown, give_up, now_ms, timings)
        case Deadline(name="deriv_resend") if state.deriv_resend_at_ms is not None:
            return [DerivResent(now_ms, ours or "")]
    return []


def _decide_resolve(
    state: WithdrawalState, event: Resolve, now_ms: int
) -> list[WithdrawalEvent]:
    if state.status is not Status.NEEDS_REVIEW:
        raise ResolveRefused(f"transaction is {state.status}, not NEEDS_REVIEW")
    resolved = Resolved(now_ms, event.action, event.note, event.operator)
    match event.action:
        case "complete":
            if not state.withdrawn:
                raise ResolveRefused("cannot complete: Deriv never moved the money")
            if state.fx_reversed:
                raise ResolveRefused("cannot complete: the USD is being returned to Deriv")
            return [resolved, Completed(now_ms, state.mpesa_receipt)]
        case "reverse":
            if not state.withdrawn:
                raise ResolveRefused("nothing to reverse: Deriv never moved the money")
            if state.fx_reversed:
                attempt = state.return_attempt + 1
                return [resolved, ReturnRetried(now_ms, _return_reference(state, attempt))]
            return [resolved, _return_started(state, "operator_reversed", event.note, now_ms)]
        case "fail":
            if state.withdrawn:
                raise ResolveRefused("cannot fail: Deriv moved the money; complete or reverse it")
            return [resolved, Failed(now_ms, "operator_failed", event.note)]
    raise ResolveRefused(f"unknown action {event.action!r}")


# ----------------------------------------------------------------------- evolve


def _status(state: WithdrawalState, status: Status, at_ms: int) -> WithdrawalState:
    if state.status is status and state.history:
        return msgspec.structs.replace(state, updated_at_ms=at_ms)
    return msgspec.structs.replace(
        state,
        status=status,
        history=(*state.history, StatusChange(status, at_ms)),
        updated_at_ms=at_ms,
    )


def evolve(state: WithdrawalState, event: WithdrawalEvent) -> WithdrawalState:
    r = msgspec.structs.replace
    match event:
        case Created():
            fresh = WithdrawalState(
                transaction_id=event.transaction_id,
                user_id=event.user_id,
                phone=event.phone,
                deriv_login_id=event.deriv_login_id,
                quote=event.quote,
                callback_token=event.callback_token,
                created_at_ms=event.at_ms,
                deriv_reference=event.deriv_reference,
            )
            # PENDING, then at once AWAITING_DERIV_CONFIRMATION: react issues the withdrawal.
            pending = _status(fresh, Status.PENDING, event.at_ms)
            return _status(pending, Status.AWAITING_DERIV_CONFIRMATION, event.at_ms)
        case Failed():
            state = r(
                state, failure=Failure(event.code, event.detail), deriv_unknown=False,
                deriv_resend_at_ms=None,
            )
            return _status(state, Status.FAILED, event.at_ms)
        case DerivWithdrawUnknown():
            return r(
                state, deriv_unknown=True, deriv_lookups=0, deriv_resend_at_ms=None,
                updated_at_ms=event.at_ms,
            )
        case DerivDeferred():
            return r(
                state, deriv_deferrals=state.deriv_deferrals + 1,
                deriv_resend_at_ms=event.resend_at_ms, updated_at_ms=event.at_ms,
            )
        case DerivResent():
            return r(state, deriv_resend_at_ms=None, updated_at_ms=event.at_ms)
        case DerivLookedUp():
            return r(state, deriv_lookups=state.deriv_lookups + 1, updated_at_ms=event.at_ms)
        case DerivReceived():
            state = r(
                state,
                deriv_transaction_id=event.deriv_transaction_id,
                deriv_unknown=False,
                deriv_resend_at_ms=None,
                payout_originator_id=event.originator_conversation_id,
            )
            return _status(state, Status.AWAITING_MPESA_DISBURSEMENT, event.at_ms)
        case PayoutAccepted():
            return r(state, payout_conversation_id=event.conversation_id, updated_at_ms=event.at_ms)
        case PayoutUnknown():
            return r(state, payout_unknown=True, updated_at_ms=event.at_ms)
        case PayoutQueried() | PayoutResent():
            return r(state, payout_queries=state.payout_queries + 1, updated_at_ms=event.at_ms)
        case Completed():
            state = r(
                state,
                mpesa_receipt=event.receipt or state.mpesa_receipt,
                in_suspense=False,
                review_reason=None,
            )
            return _status(state, Status.COMPLETED, event.at_ms)
        case ReturnStarted():
            state = r(
                state,
                fx_reversed=True,
                return_reference=event.reference,
                return_sent_at_ms=event.at_ms,
                return_attempt=1,
                deriv_deferrals=0,
                deriv_resend_at_ms=None,
                failure=Failure(event.reason_code, event.detail),
                in_suspense=False,
                review_reason=None,
            )
            return _status(state, Status.REVERSING, event.at_ms)
        case ReturnUnknown():
            return r(
                state, return_unknown=True, return_lookups=0, deriv_resend_at_ms=None,
                updated_at_ms=event.at_ms,
            )
        case ReturnLookedUp():
            return r(state, return_lookups=state.return_lookups + 1, updated_at_ms=event.at_ms)
        case ReturnRetried():
            state = r(
                state,
                return_reference=event.reference,
                return_sent_at_ms=event.at_ms,
                return_attempt=state.return_attempt + 1,
                return_unknown=False,
                return_lookups=0,
                deriv_deferrals=0,
                deriv_resend_at_ms=None,
                in_suspense=False,
                review_reason=None,
            )
            return _status(state, Status.REVERSING, event.at_ms)
        case Returned():
            state = r(state, return_transaction_id=event.deriv_transaction_id, return_unknown=False)
            return _status(state, Status.REVERSED, event.at_ms)
        case ReviewNeeded():
            parks = state.withdrawn and not state.in_suspense
            state = r(
                state,
                deriv_resend_at_ms=None,
                review_reason=event.reason,
                in_suspense=state.withdrawn,
                kes_parked=state.kes_parked or (parks and not state.fx_reversed),
                usd_parks=state.usd_parks + (1 if parks and state.fx_reversed else 0),
            )
            return _status(state, Status.NEEDS_REVIEW, event.at_ms)
        case Resolved():
            return r(state, updated_at_ms=event.at_ms)
        case PaidAfterReturn():
            return r(
                state,
                paid_after_return=True,
                mpesa_receipt=event.receipt or state.mpesa_receipt,
                updated_at_ms=event.at_ms,
            )
    raise TypeError(f"not a withdrawal event: {event!r}")


# ------------------------------------------------------------------------ react


def react(
    before: WithdrawalState, event: WithdrawalEvent, after: WithdrawalState, timings: SagaTimings
) -> list[Command]:
    """What to do because ``event`` was just persisted."""
    commands: list[Command] = []
    match event:
        case Created():
            assert after.deriv_reference is not None
            # The shell fills in the verification code it keeps in memory.
            commands.append(
                WithdrawFromDeriv(_quote(after).usd_cents, "", after.deriv_reference)
            )
        case DerivWithdrawUnknown() | DerivLookedUp():
            lookup_at_ms = event.at_ms + timings.deriv_lookup_interval_ms
            commands += [
                _find_withdrawal(after, event.reference),
                SetTimer("deriv_lookup", lookup_at_ms),
            ]
        case DerivDeferred():
            commands.append(SetTimer("deriv_resend", event.resend_at_ms))
        case DerivResent() if after.status is Status.REVERSING:
            commands.append(_return(after))
        case DerivResent():
            # The shell has forgotten the code by now; the Deriv gateway actor
            # keeps it, in memory, for a withdrawal it was told to retry later.
            commands.append(WithdrawFromDeriv(_quote(after).usd_cents, "", event.reference))
        case DerivReceived():
            commands += [
                PostLedger(_received(after)),
                PostLedger(_fx(after)),
                _payout(after),
                SetTimer("b2c", event.at_ms + timings.b2c_result_ms),
            ]
        case PayoutResent():
            commands += [_payout(after), SetTimer("b2c", event.at_ms + timings.b2c_result_ms)]
        case PayoutUnknown():
            assert after.payout_originator_id is not None
            commands.append(QueryB2C(after.payout_originator_id, after.callback_token))
        case PayoutQueried():
            assert after.payout_originator_id is not None
            commands += [
                QueryB2C(after.payout_originator_id, after.callback_token),
                SetTimer("b2c", event.at_ms + timings.b2c_result_ms),
            ]
        case Completed():
            if before.in_suspense:
                commands.append(PostLedger(_unsuspend(before)))
            commands.append(PostLedger(_paid_out(after)))
        case ReturnStarted():
            if before.in_suspense:
                commands.append(PostLedger(_unsuspend(before)))
            commands += [PostLedger(_fx_reversal(after)), _return(after)]
        case ReturnRetried():
            if before.in_suspense:
                commands.append(PostLedger(_unsuspend(before)))
            commands.append(_return(after))
        case ReturnUnknown() | ReturnLookedUp():
            lookup_at_ms = event.at_ms + timings.deriv_lookup_interval_ms
            commands += [
                _find_return(after, event.reference),
                SetTimer("deriv_lookup", lookup_at_ms),
            ]
        case Returned():
            commands.append(PostLedger(_returned(after)))
        case ReviewNeeded():
            if after.in_suspense and not before.in_suspense:
                commands.append(PostLedger(_suspend(after)))
        case PaidAfterReturn():
            kes = _quote(after).kes_cents
            commands += [
                PostLedger(_paid_after_return(after)),
                Alert(
                    f"M-Pesa paid the payout (receipt {event.receipt}) after the USD began "
                    f"going back to Deriv: the user was paid twice; KES cents {kes} "
                    "are in suspense until recovered"
                ),
                Notify(after.status),
            ]
    if after.status is not before.status:
        commands.append(Notify(after.status))
    return commands


def _payout(state: WithdrawalState) -> PayB2C:
    assert state.payout_originator_id is not None
    return PayB2C(
        originator_conversation_id=state.payout_originator_id,
        phone=state.phone,
        amount_kes=_quote(state).kes_cents // 100,
        remarks="PenPay withdrawal",
        callback_token=state.callback_token,
    )


def _find_withdrawal(state: WithdrawalState, reference: str) -> FindDerivWithdrawal:
    """The lookup of the withdrawal: note, amount and the user's own loginid must match."""
    usd = _quote(state).usd_cents
    return FindDerivWithdrawal(reference, usd, state.deriv_login_id, state.created_at_ms)


def _find_return(state: WithdrawalState, reference: str) -> FindDerivTransfer:
    """The lookup of the transfer back: note, amount and the user's loginid must match."""
    usd = _quote(state).usd_cents
    since_ms = state.return_sent_at_ms or state.created_at_ms
    return FindDerivTransfer(reference, usd, state.deriv_login_id, since_ms)


def _return(state: WithdrawalState) -> CreditDeriv:
    assert state.return_reference is not None
    return CreditDeriv(state.deriv_login_id, _quote(state).usd_cents, state.return_reference)


def recover(
    state: WithdrawalState, now_ms: int, timings: SagaTimings
) -> tuple[list[WithdrawalEvent], list[Command]]:
    """What was in flight when the actor stopped: re-derived, never resent blindly.

    Returns events to persist first (a Deriv call that may have been in flight
    is now of unknown outcome) and commands to run: ledger postings are
    re-issued (idempotent by transfer id), deadlines re-armed, and a
    money-moving call whose answer was lost becomes a reconciliation query.
    The withdrawal itself can never be resent: the code was only in memory.
    """
    if not state.started:
        return [], []
    ledger: list[Command] = [PostLedger(p) for p in ledger_so_far(state)]
    if state.status in TERMINAL:
        return [], ledger  # a crash may have come between the status and its postings
    match state.status:
        case Status.PENDING | Status.AWAITING_DERIV_CONFIRMATION:
            assert state.deriv_reference is not None
            if state.deriv_resend_at_ms is not None:
                # Refused for now, and nothing went out since: the resend still waits.
                return [], [SetTimer("deriv_resend", max(state.deriv_resend_at_ms, now_ms))]
            if state.deriv_unknown:
                return [], [
                    _find_withdrawal(state, state.deriv_reference),
                    SetTimer("deriv_lookup", now_ms + timings.deriv_lookup_interval_ms),
                ]
            # The withdraw call may or may not have gone out: look it up.
            return [DerivWithdrawUnknown(now_ms, state.deriv_reference, "actor restarted")], []
        case Status.AWAITING_MPESA_DISBURSEMENT:
            assert state.payout_originator_id is not None
            if state.payout_conversation_id is None and not state.payout_unknown:
                ledger.append(_payout(state))  # safe: same OriginatorConversationID
            else:
                ledger.append(QueryB2C(state.payout_originator_id, state.callback_token))
            ledger.append(SetTimer("b2c", now_ms + timings.b2c_result_ms))
            return [], ledger
        case Status.REVERSING:
            assert state.return_reference is not None
            if state.deriv_resend_at_ms is not None:
                at_ms = max(state.deriv_resend_at_ms, now_ms)
                return [], [*ledger, SetTimer("deriv_resend", at_ms)]
            if state.return_unknown:
                return [], [
                    *ledger,
                    _find_return(state, state.return_reference),
                    SetTimer("deriv_lookup", now_ms + timings.deriv_lookup_interval_ms),
                ]
            # The transfer back may or may not have gone out: look it up, never resend.
            unknown = ReturnUnknown(now_ms, state.return_reference, "actor restarted")
            return [unknown], ledger
    return [], ledger  # NEEDS_REVIEW: the parked money stays parked
