"""The vocabulary shared by the deposit and withdrawal flows.

Each flow is a pure state machine in three functions:

- ``decide(state, input, now_ms) -> events``: what happened, given an input
  (an HTTP request, a callback, a gateway's answer, a deadline);
- ``evolve(state, event) -> state``: apply one event (also used on replay);
- ``react(before, event, after) -> commands``: what to do next because of
  that event (call M-Pesa, call Deriv, post to the ledger, set a timer).

The actor around it persists the events *before* it carries out the
commands, so every identifier a command uses (STK ``AccountReference``, the
callback token, the Deriv reference, the B2C ``OriginatorConversationID``)
is durable before the call. On recovery, ``recover(state) -> commands``
re-derives what was in flight: a reconciliation query, never a blind retry
of a money-moving call.
"""

from __future__ import annotations

import enum
import uuid
import zlib

import msgspec

from penpay.money import Currency


class Status(enum.StrEnum):
    PENDING = "PENDING"
    AWAITING_MPESA_CALLBACK = "AWAITING_MPESA_CALLBACK"
    AWAITING_DERIV_CONFIRMATION = "AWAITING_DERIV_CONFIRMATION"
    AWAITING_MPESA_DISBURSEMENT = "AWAITING_MPESA_DISBURSEMENT"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REVERSING = "REVERSING"
    REVERSED = "REVERSED"
    NEEDS_REVIEW = "NEEDS_REVIEW"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.REVERSED})


class Failure(msgspec.Struct, frozen=True):
    code: str
    detail: str


class StatusChange(msgspec.Struct, frozen=True):
    status: Status
    at_ms: int


# --------------------------------------------------------------------- ledger


class Account(enum.StrEnum):
    """The ledger accounts the flows post to (codes of the chart of accounts)."""

    MPESA_FLOAT = "mpesa_float"
    DERIV_FLOAT = "deriv_float"
    IN_TRANSIT_KES = "customer_in_transit_kes"
    IN_TRANSIT_USD = "customer_in_transit_usd"
    FX_POSITION_KES = "fx_position_kes"
    FX_POSITION_USD = "fx_position_usd"
    SPREAD_REVENUE_KES = "fx_spread_revenue_kes"
    ROUNDING_KES = "rounding_kes"
    SUSPENSE_KES = "suspense_kes"
    SUSPENSE_USD = "suspense_usd"
    OWNER_EQUITY_KES = "owner_equity_kes"
    OWNER_EQUITY_USD = "owner_equity_usd"


class Leg(msgspec.Struct, frozen=True):
    debit: Account
    credit: Account
    amount_cents: int
    currency: Currency


class PostingKind(enum.StrEnum):
    POSTED = "posted"  # the legs are applied at once, all or none
    HOLD = "hold"  # one pending leg (a reservation)
    POST_HOLD = "post_hold"  # make the named hold final
    VOID_HOLD = "void_hold"  # release the named hold


class Posting(msgspec.Struct, frozen=True, kw_only=True):
    """A named ledger step of one transaction; its transfer ids derive from the name."""

    name: str
    kind: PostingKind
    legs: tuple[Leg, ...] = ()
    hold: str | None = None  # for POST_HOLD / VOID_HOLD: the HOLD posting's name

    def transfer_id(self, transaction_id: str, index: int = 0) -> str:
        """Deterministic, so re-posting after a crash is an idempotent no-op."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"penpay:{transaction_id}/{self.name}/{index}"))


def kes_posting(name: str, debit: Account, credit: Account, amount_cents: int) -> Posting:
    """A one-leg KES posting applied at once."""
    leg = Leg(debit, credit, amount_cents, Currency.KES)
    return Posting(name=name, kind=PostingKind.POSTED, legs=(leg,))


# ------------------------------------------------------------------- commands


class Command(msgspec.Struct, frozen=True, tag_field="command"):
    """Something the actor must do after persisting events."""


class PostLedger(Command, frozen=True, tag="post_ledger"):
    posting: Posting


class SetTimer(Command, frozen=True, tag="set_timer"):
    name: str
    at_ms: int


class StartStkPush(Command, frozen=True, tag="stk_push"):
    phone: str
    amount_kes: int  # whole shillings
    account_reference: str
    callback_token: str


class QueryStk(Command, frozen=True, tag="stk_query"):
    checkout_request_id: str


class CreditDeriv(Command, frozen=True, tag="deriv_credit"):
    login_id: str
    usd_cents: int
    reference: str


class FindDerivTransfer(Command, frozen=True, tag="deriv_find"):
    """Look up an agent → client transfer: its row must carry the note, this
    amount and this client, or it is not ours (see :class:`DerivLookup`)."""

    reference: str
    usd_cents: int
    login_id: str  # the client the transfer went to
    #: The transfer cannot be older than this (when the call under this
    #: reference was first sent, PenPay's clock, Unix ms); the lookup reads
    #: the statement from there on. 0: as far back as its page limit allows.
    since_ms: int = 0


class PayB2C(Command, frozen=True, tag="b2c_pay"):
    originator_conversation_id: str
    phone: str
    amount_kes: int  # whole shillings
    remarks: str
    callback_token: str


class QueryB2C(Command, frozen=True, tag="b2c_query"):
    originator_conversation_id: str
    callback_token: str


class WithdrawFromDeriv(Command, frozen=True, tag="deriv_withdraw"):
    usd_cents: int
    verification_code: str
    reference: str


class FindDerivWithdrawal(Command, frozen=True, tag="deriv_find_withdrawal"):
    """Look up a client → agent withdrawal: note, amount and the client's loginid.

    The note is the client's free text: any Deriv client can send the agent
    money described with another user's reference, so the note alone proves nothing.
    """

    reference: str
    usd_cents: int
    login_id: str  # the user whose account the USD must come from
    since_ms: int = 0  # as for FindDerivTransfer


class Alert(Command, frozen=True, tag="alert"):
    """Something an operator must act on although no status asks for review."""

    message: str


class Notify(Command, frozen=True, tag="notify"):
    """Tell whoever waits on this transaction that its status changed."""

    status: Status


# --------------------------------------------------------------------- inputs


class Input(msgspec.Struct, frozen=True, tag_field="input"):
    """Something that happened to a transaction, fed to ``decide``."""


class StkPushAccepted(Input, frozen=True, tag="stk_accepted"):
    merchant_request_id: str
    checkout_request_id: str


class StkPushRejected(Input, frozen=True, tag="stk_rejected"):
    error_code: str
    message: str


class StkPushUnknown(Input, frozen=True, tag="stk_unknown"):
    reason: str


class StkCallback(Input, frozen=True, tag="stk_callback"):
    checkout_request_id: str
    result_code: str
    result_desc: str
    receipt: str | None = None
    amount_kes_cents: int | None = None
    phone: str | None = None


class StkQueryResult(Input, frozen=True, tag="stk_query_result"):
    """``result_code`` None: still processing, or Daraja could not say (500)."""

    checkout_request_id: str
    result_code: str | None
    result_desc: str = ""


class DerivCredited(Input, frozen=True, tag="deriv_credited"):
    reference: str
    deriv_transaction_id: int


class DerivRejected(Input, frozen=True, tag="deriv_rejected"):
    reference: str
    code: str
    message: str


class DerivUnknown(Input, frozen=True, tag="deriv_unknown"):
    reference: str
    reason: str


class DerivRetryLater(Input, frozen=True, tag="deriv_retry_later"):
    """Deriv refused the call for now (rate limit, "Request too frequent",
    maintenance) before doing anything: the same call may be sent again later."""

    reference: str
    code: str
    message: str


class DerivLookup(Input, frozen=True, tag="deriv_lookup"):
    """The statement lookup's answer: the Deriv transaction id, or None if absent.

    ``conflict``: with None, the statement holds rows with the reference but
    another amount, direction or client (described); they are not the call's
    row, and each flow decides what such a sighting means.
    """

    reference: str
    deriv_transaction_id: int | None
    conflict: str | None = None


class B2CAccepted(Input, frozen=True, tag="b2c_accepted"):
    originator_conversation_id: str
    conversation_id: str


class B2CRejected(Input, frozen=True, tag="b2c_rejected"):
    originator_conversation_id: str
    error_code: str
    message: str


class B2CUnknown(Input, frozen=True, tag="b2c_unknown"):
    originator_conversation_id: str
    reason: str


#: B2C result codes that say M-Pesa refused the payout for good (protocols.md 1.5):
#: balance, limits, the initiator's rights and credentials, the receiving party,
#: a malformed request. Any other failure code (17 internal failure, 26 system
#: busy, 15 duplicate, 100000000 "cached, waiting for resending", or one not seen
#: before) does not prove no money left, so Transaction Status decides it.
B2C_FINAL_FAILURES = frozenset({
    "1", "2", "3", "4", "8", "11", "18", "20", "21", "22", "24", "25", "29",
    "2001", "2006", "2028", "2040", "8006", "SFC_IC0003",
})


class B2CResult(Input, frozen=True, tag="b2c_result"):
    """A B2C result or a Transaction Status answer about the payout.

    ``result_code`` "0": the payout completed; None: no answer yet (the query
    is pending, failed, or timed out). Any other code from the payout's own
    result is its failure. From a status query (``from_status_query``) it is
    only a failure when ``payout_failed`` says M-Pesa reports the payout as
    failed; otherwise M-Pesa holds no such payout, or not yet: a query is no
    proof that a request still travelling will not be paid.
    """

    originator_conversation_id: str
    result_code: str | None
    result_desc: str = ""
    receipt: str | None = None
    amount_kes_cents: int | None = None
    #: True when this answers a Transaction Status query rather than the payout itself.
    from_status_query: bool = False
    payout_failed: bool = False


class Deadline(Input, frozen=True, tag="deadline"):
    name: str


class Resolve(Input, frozen=True, tag="resolve"):
    """An operator's decision on a NEEDS_REVIEW transaction."""

    action: str  # complete | reverse | fail
    note: str
    operator: str


class ResolveRefused(Exception):
    """An operator asked for something this transaction cannot do; nothing changed."""


# ------------------------------------------------------------------- policies


class SagaTimings(msgspec.Struct, frozen=True, kw_only=True):
    """How long each wait may last; all in milliseconds."""

    stk_callback_ms: int = 90_000  # the prompt times out on the phone after about 60 s
    stk_query_interval_ms: int = 10_000
    stk_queries_max: int = 12
    deriv_lookup_interval_ms: int = 5_000
    #: A Deriv call whose answer was lost is declared absent (and a credit
    #: retried under a new reference, a withdrawal failed) only after this many
    #: lookups found nothing: a minute at the interval above. Deriv can apply a
    #: request some seconds after the socket carrying it died; a verdict within
    #: that time would credit twice.
    deriv_lookups_max: int = 12
    deriv_attempts_max: int = 2
    #: A Deriv call refused "for now" (:class:`DerivRetryLater`) is sent again,
    #: under the same reference, after a back-off that starts here, doubles and
    #: is capped (plus up to a fifth of jitter); after this many resends the
    #: flow gives up as for a refusal. About six and a half minutes in all.
    deriv_resend_first_ms: int = 10_000
    deriv_resend_cap_ms: int = 120_000
    deriv_resends_max: int = 6
    b2c_result_ms: int = 120_000
    b2c_queries_max: int = 6
    #: A deposit parked because M-Pesa's query never answered keeps asking, slowly,
    #: and settles itself when M-Pesa does (a transient outage needs no operator).
    stk_review_query_interval_ms: int = 300_000
    stk_review_queries_max: int = 288  # a day at the interval above


#: The STK result codes that end a prompt unpaid (protocols.md 1.3), and the
#: failure each one means. Any other code is not an answer: protocols.md says
#: to treat an unknown code as unknown and non-terminal, re-query, then page a
#: human, since failing the deposit could hide shillings M-Pesa did take.
STK_FAILURES: dict[str, str] = {
    "1": "mpesa_insufficient_funds",
    "1032": "mpesa_cancelled",
    "1037": "mpesa_timeout",
    "1019": "mpesa_timeout",
    "2001": "mpesa_wrong_pin",
    "17": "mpesa_rejected",  # the same amount to the same customer within 2 minutes
    "1001": "mpesa_rejected",  # a transaction already in process for the subscriber
    "2": "mpesa_rejected",  # limit rules: below the minimum, above the maximum,
    "3": "mpesa_rejected",  # over the customer's daily limit, over the
    "4": "mpesa_rejected",  # receiving account's maximum balance
    "8": "mpesa_rejected",
    "1025": "mpesa_failed",  # the push could not be sent
    "9999": "mpesa_failed",
    "2028": "mpesa_failed",  # our own configuration: product, operator, credential
    "8006": "mpesa_failed",
    "SFC_IC0003": "mpesa_failed",
}


def stk_failure_code(result_code: str) -> str | None:
    """The failure an STK result code means; None: not a known final answer."""
    return STK_FAILURES.get(result_code)


def deriv_resend_delay_ms(timings: SagaTimings, resends: int, reference: str) -> int:
    """How long to wait before resending a call Deriv refused for now.

    Exponential from ``deriv_resend_first_ms``, capped, stretched by a jitter
    of up to 20 % that is derived from the reference and the try (pure, so a
    replay agrees): transactions refused by the same burst spread out instead
    of all coming back at once and being refused again.
    """
    base = min(timings.deriv_resend_first_ms << resends, timings.deriv_resend_cap_ms)
    jitter_permille = zlib.crc32(f"{reference}/{resends}".encode()) % 201
    return base + base * jitter_permille // 1000


def short_reference(transaction_id: str) -> str:
    """A 12-character reference (STK ``AccountReference`` limit) from a UUID."""
    return "PP" + transaction_id.replace("-", "")[-10:].upper()
