"""The deposit state machine, exercised without any I/O."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penpay.actors import deposit as d
from penpay.actors.fx import FxPolicy, TransactionType
from penpay.actors.saga import (
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
    FindDerivTransfer,
    Input,
    PayB2C,
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
    StkCallback,
    StkPushAccepted,
    StkPushRejected,
    StkPushUnknown,
    StkQueryResult,
)
from penpay.money import Currency
from tests.actors.resends import assert_resent_only_after_a_refusal_for_now

TIMINGS = SagaTimings()
PHONE = "254712345678"
QUOTE = FxPolicy(mid_kes_cents_per_usd=13050, spread_kes_cents=500).quote(
    TransactionType.DEPOSIT, 1001, Currency.USD, now_ms=0
)
KES = QUOTE.kes_cents
CHECKOUT = "ws_CO_1"
START = d.Start(
    transaction_id="0193a000-0000-7000-8000-000000000001",
    user_id="u1",
    phone=PHONE,
    deriv_login_id="CR100001",
    quote=QUOTE,
    callback_token="tok",
)


class Flow:
    """Feeds inputs through decide/evolve/react and keeps what happened."""

    def __init__(self, timings: SagaTimings = TIMINGS) -> None:
        self.timings = timings
        self.state = d.DepositState()
        self.events: list[d.DepositEvent] = []
        self.commands: list[Command] = []
        self.now_ms = 0

    def feed(self, *inputs: Input) -> list[Command]:
        new: list[Command] = []
        for item in inputs:
            self.now_ms += 1000
            for event in d.decide(self.state, item, self.now_ms, self.timings):
                before = self.state
                self.state = d.evolve(before, event)
                self.events.append(event)
                new += d.react(before, event, self.state, self.timings)
        self.commands += new
        return new

    def restart(self) -> list[Command]:
        """What the shell does after a crash: persist recover's events, then act."""
        self.now_ms += 1000
        events, commands = d.recover(self.state, self.now_ms, self.timings)
        for event in events:
            before = self.state
            self.state = d.evolve(before, event)
            self.events.append(event)
            commands += d.react(before, event, self.state, self.timings)
        return commands

    def replayed(self) -> d.DepositState:
        state = d.DepositState()
        for event in self.events:
            state = d.evolve(state, event)
        return state

    def postings(self) -> list[str]:
        return [c.posting.name for c in self.commands if isinstance(c, PostLedger)]

    @property
    def reference(self) -> str:
        assert self.state.deriv_reference is not None
        return self.state.deriv_reference


def paid_flow(timings: SagaTimings = TIMINGS) -> Flow:
    flow = Flow(timings)
    flow.feed(START, StkPushAccepted("m1", CHECKOUT))
    flow.feed(StkCallback(CHECKOUT, "0", "ok", "RCPT1", KES, PHONE))
    flow.feed(StkQueryResult(CHECKOUT, "0"))
    return flow


def test_the_happy_path_credits_deriv_once_and_books_every_cent() -> None:
    flow = Flow()
    commands = flow.feed(START)
    assert isinstance(commands[0], StartStkPush)
    assert commands[0].amount_kes == KES // 100 and commands[0].account_reference.startswith("PP")
    assert flow.state.status is Status.PENDING
    flow.feed(StkPushAccepted("m1", CHECKOUT))
    assert flow.state.status is Status.AWAITING_MPESA_CALLBACK
    commands = flow.feed(StkCallback(CHECKOUT, "0", "ok", "RCPT1", KES, PHONE))
    assert [type(c) for c in commands] == [QueryStk]  # a callback is only a hint
    assert flow.state.status is Status.AWAITING_MPESA_CALLBACK
    commands = flow.feed(StkQueryResult(CHECKOUT, "0"))
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION
    credit = [c for c in commands if isinstance(c, CreditDeriv)]
    assert credit == [CreditDeriv("CR100001", 1001, flow.reference)]
    flow.feed(DerivCredited(flow.reference, 777))
    assert flow.state.status is Status.COMPLETED
    assert flow.state.deriv_transaction_id == 777
    assert flow.postings() == ["mpesa_collected", "fx_conversion", "deriv_float_paid"]
    assert [h.status for h in flow.state.history] == [
        Status.PENDING, Status.AWAITING_MPESA_CALLBACK,
        Status.AWAITING_DERIV_CONFIRMATION, Status.COMPLETED,
    ]
    fx = next(c.posting for c in flow.commands if isinstance(c, PostLedger)
              and c.posting.name == "fx_conversion")
    kes_out = sum(leg.amount_cents for leg in fx.legs if leg.currency is Currency.KES)
    assert kes_out == KES  # all of the collected shillings are accounted for


@pytest.mark.parametrize(
    ("code", "failure"),
    [("1032", "mpesa_cancelled"), ("1", "mpesa_insufficient_funds"),
     ("2001", "mpesa_wrong_pin"), ("1037", "mpesa_timeout"), ("9999", "mpesa_failed")],
)
def test_an_unpaid_prompt_fails_and_releases_the_float(code: str, failure: str) -> None:
    flow = Flow()
    flow.feed(START, StkPushAccepted("m1", CHECKOUT), StkCallback(CHECKOUT, code, "no"))
    assert flow.state.status is Status.FAILED
    assert flow.state.failure is not None and flow.state.failure.code == failure
    assert flow.postings() == ["deriv_float_released"]
    assert not any(isinstance(c, CreditDeriv) for c in flow.commands)


def test_an_stk_code_nobody_knows_never_fails_the_deposit() -> None:
    """protocols.md 1.3: an unknown code is unknown and non-terminal: re-query, then a
    human. Failing on it voided the float hold, although M-Pesa may have taken the
    customer's shillings."""
    flow = Flow()
    flow.feed(START, StkPushAccepted("m1", CHECKOUT), StkCallback(CHECKOUT, "1036", "odd"))
    assert flow.state.status is Status.AWAITING_MPESA_CALLBACK  # a hint at most
    for _ in range(TIMINGS.stk_queries_max + 1):
        flow.feed(Deadline("stk"), StkQueryResult(CHECKOUT, "1036", "odd"))
    assert flow.state.status is Status.NEEDS_REVIEW
    assert flow.state.review_reason is not None and "1036" in flow.state.review_reason
    assert "deriv_float_released" not in flow.postings()
    flow.feed(Deadline("stk_review"), StkQueryResult(CHECKOUT, "1036", "odd"))
    assert flow.state.status is Status.NEEDS_REVIEW  # still not a failure
    flow.feed(Deadline("stk_review"), StkQueryResult(CHECKOUT, "0"))
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION  # paid after all


def test_duplicate_and_late_callbacks_change_nothing() -> None:
    flow = paid_flow()
    flow.feed(DerivCredited(flow.reference, 1))
    events = len(flow.events)
    for late in (StkCallback(CHECKOUT, "0", "ok", "RCPT1", KES, PHONE),
                 StkCallback(CHECKOUT, "1032", "cancelled"), StkQueryResult(CHECKOUT, "0"),
                 DerivCredited(flow.reference, 2)):
        assert flow.feed(late) == []
    assert len(flow.events) == events
    assert flow.state.deriv_transaction_id == 1


def test_a_callback_for_another_checkout_or_amount_is_ignored() -> None:
    flow = Flow()
    flow.feed(START, StkPushAccepted("m1", CHECKOUT))
    assert flow.feed(StkCallback("ws_CO_other", "0", "ok", "R", KES, PHONE)) == []
    assert flow.feed(StkCallback(CHECKOUT, "0", "ok", "R", KES + 100, PHONE)) == []
    assert flow.feed(StkCallback(CHECKOUT, "0", "ok", "R", KES, "254700000000")) == []
    assert flow.state.status is Status.AWAITING_MPESA_CALLBACK and not flow.state.paid_claimed


def test_no_callback_at_all_is_settled_by_querying() -> None:
    flow = Flow()
    flow.feed(START, StkPushAccepted("m1", CHECKOUT))
    commands = flow.feed(Deadline("stk"))
    assert [type(c).__name__ for c in commands] == ["QueryStk", "SetTimer"]
    flow.feed(StkQueryResult(CHECKOUT, None))  # 4999 still processing, or a 500
    assert flow.state.status is Status.AWAITING_MPESA_CALLBACK
    flow.feed(Deadline("stk"), StkQueryResult(CHECKOUT, "0"))
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION


def test_a_query_that_never_answers_ends_in_review_with_no_money_moved() -> None:
    flow = Flow()
    flow.feed(START, StkPushAccepted("m1", CHECKOUT))
    for _ in range(TIMINGS.stk_queries_max + 1):
        flow.feed(Deadline("stk"), StkQueryResult(CHECKOUT, None))
    assert flow.state.status is Status.NEEDS_REVIEW
    assert not flow.state.in_suspense
    assert "suspense_in" not in flow.postings()


def test_a_callback_that_disagrees_with_the_query_needs_review() -> None:
    flow = Flow()
    flow.feed(START, StkPushAccepted("m1", CHECKOUT))
    flow.feed(StkCallback(CHECKOUT, "0", "ok", "R", KES, PHONE), StkQueryResult(CHECKOUT, "1032"))
    assert flow.state.status is Status.NEEDS_REVIEW


def test_a_lost_stk_response_is_recovered_from_the_callback() -> None:
    flow = Flow()
    flow.feed(START, StkPushUnknown("read timeout"))
    assert flow.state.status is Status.PENDING
    flow.feed(StkCallback(CHECKOUT, "0", "ok", "R", KES, PHONE))
    assert flow.state.checkout_request_id == CHECKOUT
    flow.feed(StkQueryResult(CHECKOUT, "0"))
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION


def test_a_lost_stk_response_and_no_callback_needs_review() -> None:
    flow = Flow()
    flow.feed(START, StkPushUnknown("read timeout"), Deadline("stk"))
    assert flow.state.status is Status.NEEDS_REVIEW
    assert not flow.state.in_suspense


def test_a_rejected_stk_push_fails() -> None:
    flow = Flow()
    flow.feed(START, StkPushRejected("400.002.02", "Invalid Amount"))
    assert flow.state.status is Status.FAILED
    assert flow.state.failure is not None and flow.state.failure.code == "mpesa_rejected"


def test_deriv_refusal_after_payment_refunds_by_b2c() -> None:
    flow = paid_flow()
    commands = flow.feed(DerivRejected(flow.reference, "PaymentAgentTransferError", "nope"))
    assert flow.state.status is Status.REVERSING
    payout = next(c for c in commands if isinstance(c, PayB2C))
    assert payout.amount_kes == KES // 100
    originator = payout.originator_conversation_id
    flow.feed(B2CAccepted(originator, "AG_1"))
    flow.feed(B2CResult(originator, "0", "ok", "RFND1", KES))
    assert flow.state.status is Status.REVERSED
    assert flow.postings() == ["mpesa_collected", "deriv_float_released", "mpesa_refunded"]
    assert [c for c in flow.commands if isinstance(c, PayB2C)] == [payout]  # exactly one payout


def test_a_duplicate_originator_rejection_is_settled_by_a_status_query() -> None:
    flow = paid_flow()
    flow.feed(DerivRejected(flow.reference, "PaymentAgentTransferError", "nope"))
    originator = flow.state.refund_originator_id
    assert originator is not None
    commands = flow.feed(B2CRejected(originator, "500.002.1001", "Duplicate"))
    assert [type(c) for c in commands] == [QueryB2C]
    flow.feed(B2CResult(originator, "0", "ok", "R", KES, from_status_query=True))
    assert flow.state.status is Status.REVERSED


def _refunding() -> tuple[Flow, str]:
    flow = paid_flow()
    flow.feed(DerivRejected(flow.reference, "PaymentAgentTransferError", "nope"))
    originator = flow.state.refund_originator_id
    assert originator is not None
    return flow, originator


def _refunds(flow: Flow) -> list[str]:
    return [c.originator_conversation_id for c in flow.commands if isinstance(c, PayB2C)]


def test_a_refund_m_pesa_refused_for_good_can_be_reversed_again_with_a_new_id() -> None:
    flow, first = _refunding()
    flow.feed(B2CAccepted(first, "AG_1"), B2CResult(first, "1", "The balance is insufficient"))
    assert flow.state.status is Status.NEEDS_REVIEW and flow.state.in_suspense
    flow.feed(Resolve("reverse", "utility account topped up", "op@penpay"))
    assert flow.state.status is Status.REVERSING
    second = flow.state.refund_originator_id
    assert _refunds(flow) == [first, second] and second == f"{first}N2"
    flow.feed(B2CResult(first, "0", "ok", "LATE", KES))  # news of the old attempt: ignored
    assert flow.state.status is Status.REVERSING
    flow.feed(B2CAccepted(second, "AG_2"), B2CResult(second, "0", "ok", "RFND2", KES))
    assert flow.state.status is Status.REVERSED
    assert Counter(flow.postings())["mpesa_refunded"] == 1
    assert flow.replayed() == flow.state


def test_a_refused_refund_resend_keeps_the_refund_identity() -> None:
    flow, first = _refunding()
    flow.feed(B2CUnknown(first, "no answer within 30 s"))
    flow.feed(B2CResult(first, "2032", "does not exist", from_status_query=True))
    assert flow.feed(B2CRejected(first, "500.003.02", "Spike Arrest Violation")) == []
    assert flow.state.status is Status.REVERSING and not flow.state.refund_failed
    for _ in range(TIMINGS.b2c_queries_max + 1):
        flow.feed(Deadline("b2c"))
    assert flow.state.status is Status.NEEDS_REVIEW
    flow.feed(Resolve("reverse", "try again", "op@penpay"))
    assert set(_refunds(flow)) == {first}  # the first may still pay: never a second id


def test_a_reversal_while_the_refund_may_still_pay_resends_the_same_id() -> None:
    flow, first = _refunding()
    flow.feed(B2CAccepted(first, "AG_1"))
    for _ in range(TIMINGS.b2c_queries_max + 1):
        flow.feed(Deadline("b2c"))
    assert flow.state.status is Status.NEEDS_REVIEW
    flow.feed(Resolve("reverse", "try again", "op@penpay"))
    assert _refunds(flow) == [first, first]  # Daraja refuses a duplicate: never paid twice


def test_a_refund_failure_that_may_not_be_final_is_settled_by_a_status_query() -> None:
    flow, first = _refunding()
    flow.feed(B2CAccepted(first, "AG_1"))
    assert flow.feed(B2CResult(first, "17", "Internal Failure")) == [QueryB2C(first, "tok")]
    assert flow.state.status is Status.REVERSING
    flow.feed(B2CResult(first, "0", "ok", "RFND1", KES, from_status_query=True))
    assert flow.state.status is Status.REVERSED


def test_socket_drop_during_the_credit_is_reconciled_when_the_transfer_is_found() -> None:
    flow = paid_flow()
    commands = flow.feed(DerivUnknown(flow.reference, "socket closed"))
    assert isinstance(commands[0], FindDerivTransfer)
    flow.feed(DerivLookup(flow.reference, 4242))
    assert flow.state.status is Status.COMPLETED
    assert flow.state.deriv_transaction_id == 4242
    assert sum(isinstance(c, CreditDeriv) for c in flow.commands) == 1  # never resent


def test_a_credit_that_provably_never_happened_is_retried_with_a_new_reference() -> None:
    flow = paid_flow()
    first = flow.reference
    flow.feed(DerivUnknown(first, "socket closed"))
    for _ in range(TIMINGS.deriv_lookups_max):
        flow.feed(Deadline("deriv_lookup"), DerivLookup(first, None))
    second = flow.reference
    assert second != first and second.endswith("attempt 2")
    credits = [c for c in flow.commands if isinstance(c, CreditDeriv)]
    assert [c.reference for c in credits] == [first, second]
    assert flow.feed(DerivLookup(first, 99)) == []  # news about the old attempt is ignored
    flow.feed(DerivCredited(second, 5))
    assert flow.state.status is Status.COMPLETED


def test_unknown_after_every_attempt_needs_review_with_the_money_in_suspense() -> None:
    flow = paid_flow()
    for _ in range(TIMINGS.deriv_attempts_max):
        ref = flow.reference
        flow.feed(DerivUnknown(ref, "drop"))
        for _ in range(TIMINGS.deriv_lookups_max):
            flow.feed(Deadline("deriv_lookup"), DerivLookup(ref, None))
    assert flow.state.status is Status.NEEDS_REVIEW
    assert flow.state.in_suspense
    assert flow.postings()[-1] == "suspense_in_1"


def test_operator_resolution_rules() -> None:
    flow = paid_flow()
    ref = flow.reference
    flow.feed(DerivUnknown(ref, "drop"))
    flow.state = d.evolve(flow.state, d.ReviewNeeded(0, "test"))
    with pytest.raises(ResolveRefused, match="cannot fail"):
        d.decide(flow.state, Resolve("fail", "x", "op"), 0, TIMINGS)
    with pytest.raises(ResolveRefused, match="unknown action"):
        d.decide(flow.state, Resolve("shrug", "x", "op"), 0, TIMINGS)
    commands = flow.feed(Resolve("complete", "seen on Deriv statement", "op@penpay"))
    assert flow.state.status is Status.COMPLETED
    assert [c.posting.name for c in commands if isinstance(c, PostLedger)] == [
        "suspense_out_1", "fx_conversion", "deriv_float_paid",
    ]
    with pytest.raises(ResolveRefused, match="not NEEDS_REVIEW"):
        d.decide(flow.state, Resolve("reverse", "x", "op"), 0, TIMINGS)


def test_start_is_idempotent() -> None:
    flow = Flow()
    flow.feed(START)
    assert flow.feed(START) == []


def test_recovery_never_resends_a_deriv_credit() -> None:
    flow = paid_flow()
    events, commands = d.recover(flow.state, flow.now_ms, TIMINGS)
    assert [type(e) for e in events] == [d.DerivCreditUnknown]
    assert not any(isinstance(c, CreditDeriv) for c in commands)
    state = d.evolve(flow.state, events[0])
    follow_up = d.react(flow.state, events[0], state, TIMINGS)
    assert any(isinstance(c, FindDerivTransfer) for c in follow_up)


def test_recovery_resends_a_refund_with_the_same_originator_id() -> None:
    flow = paid_flow()
    flow.feed(DerivRejected(flow.reference, "PaymentAgentTransferError", "nope"))
    first = next(c for c in flow.commands if isinstance(c, PayB2C))
    _, commands = d.recover(flow.state, flow.now_ms, TIMINGS)
    again = next(c for c in commands if isinstance(c, PayB2C))
    assert again == first  # Daraja refuses a duplicate OriginatorConversationID


# ------------------------------------------------------- Deriv: refused for now

BUSY = ("PaymentAgentTransferError", "Request too frequent. Please try again later.")


def _resend_timer(commands: list[Command]) -> SetTimer:
    (timer,) = [c for c in commands if isinstance(c, SetTimer) and c.name == "deriv_resend"]
    return timer


def test_a_credit_refused_for_now_is_resent_under_the_same_reference() -> None:
    """Regression: BI102 / RateLimit refunded a paid deposit a minute's wait would credit."""
    flow = paid_flow()
    ref = flow.reference
    commands = flow.feed(DerivRetryLater(ref, *BUSY))
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION
    assert not any(isinstance(c, PayB2C | CreditDeriv) for c in commands)
    assert _resend_timer(commands).at_ms >= flow.now_ms + TIMINGS.deriv_resend_first_ms
    commands = flow.feed(Deadline("deriv_resend"))
    assert commands == [CreditDeriv("CR100001", 1001, ref)]  # same call, same reference
    flow.feed(DerivCredited(ref, 77))
    assert flow.state.status is Status.COMPLETED
    assert flow.postings() == ["mpesa_collected", "fx_conversion", "deriv_float_paid"]


def test_the_back_off_doubles_up_to_its_cap() -> None:
    flow = paid_flow()
    delays = []
    for _ in range(TIMINGS.deriv_resends_max):
        commands = flow.feed(DerivRetryLater(flow.reference, "RateLimit", "slow down"))
        delays.append(_resend_timer(commands).at_ms - flow.now_ms)
        flow.feed(Deadline("deriv_resend"))
    bases = [min(TIMINGS.deriv_resend_first_ms * 2**n, TIMINGS.deriv_resend_cap_ms)
             for n in range(TIMINGS.deriv_resends_max)]
    assert bases[-1] == TIMINGS.deriv_resend_cap_ms  # the cap is reached
    for delay, base in zip(delays, bases, strict=True):
        assert base <= delay <= base * 6 // 5  # plus up to a fifth of jitter
    assert len(set(delays)) == len(delays)  # jittered: no two the same
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION


def test_a_credit_refused_for_now_after_every_resend_is_refunded() -> None:
    flow = paid_flow()
    ref = flow.reference
    for _ in range(TIMINGS.deriv_resends_max):
        flow.feed(DerivRetryLater(ref, *BUSY), Deadline("deriv_resend"))
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION
    commands = flow.feed(DerivRetryLater(ref, *BUSY))
    assert flow.state.status is Status.REVERSING
    assert flow.state.failure is not None and flow.state.failure.code == "deriv_unavailable"
    assert any(isinstance(c, PayB2C) for c in commands)
    credits = [c.reference for c in flow.commands if isinstance(c, CreditDeriv)]
    assert credits == [ref] * (1 + TIMINGS.deriv_resends_max)


def test_refused_for_now_while_the_outcome_is_unknown_changes_nothing() -> None:
    """A call under the reference may have moved money: only the statement decides."""
    flow = paid_flow()
    ref = flow.reference
    flow.feed(DerivUnknown(ref, "socket closed"))
    assert flow.feed(DerivRetryLater(ref, *BUSY)) == []
    assert flow.feed(Deadline("deriv_resend")) == []
    assert sum(isinstance(c, CreditDeriv) for c in flow.commands) == 1


def test_a_duplicate_refusal_schedules_one_resend() -> None:
    flow = paid_flow()
    flow.feed(DerivRetryLater(flow.reference, *BUSY))
    assert flow.feed(DerivRetryLater(flow.reference, *BUSY)) == []
    assert flow.state.deriv_deferrals == 1


def test_recovery_with_a_resend_waiting_keeps_waiting_and_looks_nothing_up() -> None:
    flow = paid_flow()
    commands = flow.feed(DerivRetryLater(flow.reference, *BUSY))
    due = _resend_timer(commands).at_ms
    events, commands = d.recover(flow.state, flow.now_ms, TIMINGS)
    assert events == []
    assert SetTimer("deriv_resend", due) in commands
    assert not any(isinstance(c, CreditDeriv | FindDerivTransfer) for c in commands)


def test_recovery_after_the_resend_went_out_looks_it_up() -> None:
    flow = paid_flow()
    flow.feed(DerivRetryLater(flow.reference, *BUSY), Deadline("deriv_resend"))
    events, commands = d.recover(flow.state, flow.now_ms, TIMINGS)
    assert [type(e) for e in events] == [d.DerivCreditUnknown]
    assert not any(isinstance(c, CreditDeriv) for c in commands)


# ------------------------------------------------------ Deriv: statement lookups


def test_the_lookup_names_the_amount_and_the_client() -> None:
    """Regression: the lookup carried the reference alone, and matched on the note.

    It reads the statement from the credit's sending, not the deposit's creation
    (a deposit that waited long for M-Pesa had thousands of rows to page through).
    """
    flow = paid_flow()
    commands = flow.feed(DerivUnknown(flow.reference, "socket closed"))
    sent_at = flow.state.deriv_sent_at_ms
    assert sent_at > flow.state.created_at_ms
    lookup = FindDerivTransfer(flow.reference, 1001, "CR100001", sent_at)
    assert lookup in commands
    _, recovered = d.recover(flow.state, flow.now_ms, TIMINGS)
    assert lookup in recovered


def test_a_row_with_our_note_but_not_our_transfer_needs_review() -> None:
    """Not ours, yet no proof of absence: a new attempt could credit twice."""
    flow = paid_flow()
    ref = flow.reference
    flow.feed(DerivUnknown(ref, "socket closed"))
    flow.feed(DerivLookup(ref, None, "withdrawal -30 (tid 5): ... to CR999. Agent note: x"))
    assert flow.state.status is Status.NEEDS_REVIEW and flow.state.in_suspense
    assert flow.state.review_reason is not None and "CR999" in flow.state.review_reason
    assert sum(isinstance(c, CreditDeriv) for c in flow.commands) == 1


# --------------------------------------------------------------- property test


class Restart(Input, frozen=True, tag="test_restart"):
    """Not a real input: the actor stops and recovers here."""


def _inputs(reference: str, originator: str | None) -> st.SearchStrategy[Input]:
    refs = st.sampled_from([reference, "PenPay deposit other attempt 1"])
    oid = st.sampled_from([originator or "none", "other"])
    return st.one_of(
        st.builds(StkPushAccepted, st.just("m"), st.sampled_from([CHECKOUT, "ws_CO_x"])),
        st.builds(StkPushRejected, st.just("400.002.02"), st.just("bad")),
        st.builds(StkPushUnknown, st.just("timeout")),
        st.builds(
            StkCallback, st.sampled_from([CHECKOUT, "ws_CO_x"]),
            st.sampled_from(["0", "1032", "1", "2001", "1037"]), st.just("d"), st.just("R"),
            st.sampled_from([KES, KES + 100]), st.sampled_from([PHONE, "254700000000"]),
        ),
        st.builds(StkQueryResult, st.just(CHECKOUT), st.sampled_from([None, "0", "1032"])),
        st.builds(Deadline, st.sampled_from(["stk", "deriv_lookup", "b2c", "deriv_resend"])),
        st.builds(DerivCredited, refs, st.integers(1, 5)),
        st.builds(DerivRejected, refs, st.just("PaymentAgentTransferError"), st.just("no")),
        st.builds(DerivRetryLater, refs, st.sampled_from(["RateLimit", BUSY[0]]), st.just("x")),
        st.builds(DerivUnknown, refs, st.just("drop")),
        st.builds(
            DerivLookup, refs, st.sampled_from([None, 9]), st.sampled_from([None, None, "x"])
        ),
        st.builds(B2CAccepted, oid, st.just("AG")),
        st.builds(B2CRejected, oid, st.sampled_from(["500.002.1001", "400.002.02"]), st.just("x")),
        st.builds(
            B2CResult, oid, st.sampled_from([None, "0", "1"]), st.just(""), st.just("R"),
            st.just(KES), st.booleans(),
        ),
        st.just(Restart()),
    )


#: Short patience, so random runs after payment reach every Deriv verdict.
FAST = SagaTimings(deriv_lookups_max=1, deriv_resends_max=1, b2c_queries_max=2)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.data())
def test_any_sequence_of_inputs_keeps_the_invariants(data: Any) -> None:
    # Half the runs start paid: random inputs seldom get M-Pesa to confirm a payment.
    if data.draw(st.booleans()):
        flow = paid_flow(FAST)
    else:
        flow = Flow(FAST)
        flow.feed(START)
    terminal_at: int | None = None
    for _ in range(data.draw(st.integers(0, 40))):
        originator = flow.state.refund_originator_id
        reference = flow.state.deriv_reference or "PenPay deposit x attempt 1"
        item = data.draw(_inputs(reference, originator))
        before = flow.state
        if isinstance(item, Restart):
            # Recovery never sends a Deriv credit: one may have gone out already.
            assert not any(isinstance(c, CreditDeriv) for c in flow.restart())
            continue
        flow.feed(item)
        if before.status in (Status.COMPLETED, Status.FAILED, Status.REVERSED):
            assert flow.state == before, "a terminal transaction changed"
            terminal_at = terminal_at or len(flow.events)
    _assert_invariants(flow)


#: Stand-in for the reference of the attempt under way (bound at feed time).
LIVE = "@live"
DERIV_ANSWERS: list[Input] = [
    DerivRetryLater(LIVE, *BUSY),
    DerivRetryLater(LIVE, "RateLimit", "You have reached the rate limit."),
    DerivRetryLater("PenPay deposit other attempt 1", *BUSY),
    Deadline("deriv_resend"),
    DerivUnknown(LIVE, "drop"),
    DerivLookup(LIVE, None),
    DerivLookup(LIVE, None, "withdrawal -30: ... to CR9. Agent note: x"),
    Deadline("deriv_lookup"),
    DerivCredited(LIVE, 5),
    DerivRejected(LIVE, "PaymentAgentTransferError", "no"),
    Restart(),
]
#: The refusal and its resend deadline, drawn more often: most other answers end the stage.
DERIV_ANSWERS += [DerivRetryLater(LIVE, *BUSY), Deadline("deriv_resend")] * 3


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(DERIV_ANSWERS), max_size=30))
def test_deriv_answers_in_any_order_never_resend_a_call_that_may_have_moved_money(
    answers: list[Input],
) -> None:
    """The Deriv stage alone, where a resend under the same reference is possible."""
    flow = paid_flow(FAST)
    for answer in answers:
        if isinstance(answer, Restart):
            assert not any(isinstance(c, CreditDeriv) for c in flow.restart())
            continue
        if getattr(answer, "reference", None) == LIVE:
            answer = msgspec.structs.replace(answer, reference=flow.reference)
        flow.feed(answer)
    _assert_invariants(flow)


def _assert_invariants(flow: Flow) -> None:
    postings = Counter(flow.postings())
    # Each ledger step is issued at most once (re-issue only happens on recovery).
    assert all(n == 1 for n in postings.values()), postings
    assert not (postings["deriv_float_paid"] and postings["deriv_float_released"])
    credits = [c for c in flow.commands if isinstance(c, CreditDeriv)]
    assert len({c.reference for c in credits}) <= FAST.deriv_attempts_max
    _assert_resent_only_after_a_refusal_for_now(flow, [c.reference for c in credits])
    if credits:
        assert postings["mpesa_collected"] == 1  # no Deriv credit without M-Pesa money
    payouts = {c.originator_conversation_id for c in flow.commands if isinstance(c, PayB2C)}
    assert len(payouts) <= 1  # one refund identity, however often it is (safely) resent
    if flow.state.status is Status.COMPLETED:
        assert postings["fx_conversion"] == 1 and postings["deriv_float_paid"] == 1
    if flow.state.status is Status.REVERSED:
        assert postings["mpesa_refunded"] == 1 and not postings["deriv_float_paid"]
    if flow.state.status is Status.FAILED:
        assert not postings["mpesa_collected"]
    assert flow.replayed() == flow.state
    holds = [c.posting for c in flow.commands if isinstance(c, PostLedger)]
    assert all(p.kind is not PostingKind.HOLD for p in holds)  # the hold is taken before Start


def _assert_resent_only_after_a_refusal_for_now(flow: Flow, sent: list[str]) -> None:
    assert_resent_only_after_a_refusal_for_now(
        flow.events, sent, resent=d.DerivCreditResent, deferred=d.DerivCreditDeferred,
        unknown=d.DerivCreditUnknown,
    )


def test_late_deriv_answers_during_a_refund_change_nothing() -> None:
    """Regression: a duplicate refusal must not start a second refund, nor a late
    success complete a deposit that is already being refunded."""
    flow = paid_flow()
    ref = flow.reference
    flow.feed(DerivRejected(ref, "PaymentAgentTransferError", "no"))
    assert flow.state.status is Status.REVERSING
    assert flow.feed(DerivRejected(ref, "PaymentAgentTransferError", "no")) == []
    assert flow.feed(DerivCredited(ref, 5)) == []
    assert flow.feed(DerivLookup(ref, 5)) == []
    assert flow.state.status is Status.REVERSING
    assert Counter(flow.postings())["deriv_float_released"] == 1


def test_payout_answers_outside_a_refund_are_ignored() -> None:
    flow = paid_flow()
    assert flow.feed(B2CResult("PPRsomething", "0", "ok", "R", KES)) == []
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION


def _parked_without_an_answer() -> Flow:
    flow = Flow()
    flow.feed(START, StkPushAccepted("m1", CHECKOUT))
    for _ in range(TIMINGS.stk_queries_max + 1):
        flow.feed(Deadline("stk"), StkQueryResult(CHECKOUT, None))
    assert flow.state.status is Status.NEEDS_REVIEW
    return flow


def test_a_deposit_parked_for_lack_of_an_answer_settles_when_mpesa_answers() -> None:
    flow = _parked_without_an_answer()
    commands = flow.feed(Deadline("stk_review"))
    assert [type(c).__name__ for c in commands] == ["QueryStk", "SetTimer"]
    flow.feed(StkQueryResult(CHECKOUT, None))  # still nothing: stays parked
    assert flow.state.status is Status.NEEDS_REVIEW
    commands = flow.feed(StkQueryResult(CHECKOUT, "0"))
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION
    assert any(isinstance(c, CreditDeriv) for c in commands)
    assert flow.state.review_reason is None


def test_a_parked_deposit_that_m_pesa_says_failed_fails() -> None:
    flow = _parked_without_an_answer()
    flow.feed(StkCallback(CHECKOUT, "0", "ok", "R", KES, PHONE))  # a hint: ask now
    assert isinstance(flow.commands[-2], QueryStk)
    flow.feed(StkQueryResult(CHECKOUT, "1032", "cancelled"))
    assert flow.state.status is Status.FAILED
    assert flow.postings()[-1] == "deriv_float_released"


def test_a_parked_deposit_stops_asking_after_a_day() -> None:
    flow = _parked_without_an_answer()
    for _ in range(TIMINGS.stk_review_queries_max):
        flow.feed(Deadline("stk_review"))
    assert flow.feed(Deadline("stk_review")) == []
    assert flow.state.status is Status.NEEDS_REVIEW


def test_a_paid_claim_contradicted_by_the_query_stays_parked_until_the_query_says_paid() -> None:
    """Regression: the review query repeating the failure that made the conflict
    failed the deposit (hold voided) although the callback said the customer paid."""
    flow = Flow()
    flow.feed(START, StkPushAccepted("m1", CHECKOUT))
    flow.feed(StkCallback(CHECKOUT, "0", "ok", "RCPT1", KES, PHONE))
    flow.feed(StkQueryResult(CHECKOUT, "1032", "cancelled"))
    assert flow.state.status is Status.NEEDS_REVIEW
    events = len(flow.events)
    commands = flow.feed(Deadline("stk_review"))
    assert [type(c).__name__ for c in commands] == ["QueryStk", "SetTimer"]
    assert flow.feed(StkQueryResult(CHECKOUT, "1032", "cancelled")) == []
    assert flow.state.status is Status.NEEDS_REVIEW and flow.state.failure is None
    assert len(flow.events) == events + 1  # only the query; the repeat adds nothing
    assert "deriv_float_released" not in flow.postings()
    commands = flow.feed(StkQueryResult(CHECKOUT, "0"))
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION
    assert any(isinstance(c, CreditDeriv) for c in commands)
    assert flow.replayed() == flow.state


def test_a_paid_claim_parked_for_lack_of_an_answer_is_not_failed_by_a_late_failure() -> None:
    flow = Flow()
    flow.feed(START, StkPushAccepted("m1", CHECKOUT))
    flow.feed(StkCallback(CHECKOUT, "0", "ok", "RCPT1", KES, PHONE))
    for _ in range(TIMINGS.stk_queries_max + 1):
        flow.feed(Deadline("stk"), StkQueryResult(CHECKOUT, None))
    assert flow.state.status is Status.NEEDS_REVIEW
    flow.feed(Deadline("stk_review"), StkQueryResult(CHECKOUT, "1032", "cancelled"))
    assert flow.state.status is Status.NEEDS_REVIEW
    assert flow.state.review_reason == "callback said paid, query says 1032"
    assert "deriv_float_released" not in flow.postings()


def test_complete_is_refused_once_a_refund_was_started() -> None:
    """Deriv refused the credit and the float hold went with the refund: there is no
    credit to complete (the post of a voided hold would fail), and the refund may pay."""
    flow, first = _refunding()
    flow.feed(B2CAccepted(first, "AG_1"), B2CResult(first, "1", "The balance is insufficient"))
    assert flow.state.status is Status.NEEDS_REVIEW
    with pytest.raises(ResolveRefused, match="refund was started"):
        d.decide(flow.state, Resolve("complete", "looks fine", "op"), flow.now_ms, TIMINGS)


def test_a_late_paid_callback_takes_up_a_deposit_parked_without_its_checkout() -> None:
    """The STK answer was lost and no callback came by the deadline; the customer paid,
    and the callback arrives while the deposit is parked. It is taken up again."""
    flow = Flow()
    flow.feed(START, StkPushUnknown("read timeout"), Deadline("stk"))
    assert flow.state.status is Status.NEEDS_REVIEW and flow.state.checkout_request_id is None
    commands = flow.feed(StkCallback(CHECKOUT, "0", "ok", "RCPT1", KES, PHONE))
    assert flow.state.checkout_request_id == CHECKOUT and flow.state.paid_claimed
    assert QueryStk(CHECKOUT) in commands  # confirmed by query before it counts
    assert any(isinstance(c, SetTimer) and c.name == "stk" for c in commands)
    flow.feed(StkQueryResult(CHECKOUT, "0"))
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION
    assert flow.replayed() == flow.state
