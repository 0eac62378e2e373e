"""The withdrawal state machine, exercised without any I/O."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penpay.actors import withdrawal as w
from penpay.actors.fx import FxPolicy, TransactionType
from penpay.actors.saga import (
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
    FindDerivTransfer,
    FindDerivWithdrawal,
    Input,
    Notify,
    PayB2C,
    Posting,
    PostLedger,
    QueryB2C,
    Resolve,
    ResolveRefused,
    SagaTimings,
    SetTimer,
    Status,
    WithdrawFromDeriv,
)
from penpay.money import Currency
from tests.actors.resends import assert_resent_only_after_a_refusal_for_now

TIMINGS = SagaTimings()
PHONE = "254712345678"
QUOTE = FxPolicy(mid_kes_cents_per_usd=13050, spread_kes_cents=500).quote(
    TransactionType.WITHDRAWAL, 1001, Currency.USD, now_ms=0
)
USD = QUOTE.usd_cents
KES = QUOTE.kes_cents
CODE = "Xq7Zk9Pw"
TX = "0193a000-0000-7000-8000-000000000002"
ORIGINATOR = "PPW" + TX.replace("-", "")
START = w.Start(
    transaction_id=TX,
    user_id="u1",
    phone=PHONE,
    deriv_login_id="CR100001",
    quote=QUOTE,
    callback_token="tok",
    verification_code=CODE,
)
CODEC = msgspec.msgpack.Encoder()


class Flow:
    """Feeds inputs through decide/evolve/react and keeps what happened."""

    def __init__(self, timings: SagaTimings = TIMINGS) -> None:
        self.timings = timings
        self.state = w.WithdrawalState()
        self.events: list[w.WithdrawalEvent] = []
        self.commands: list[Command] = []
        self.now_ms = 0

    def feed(self, *inputs: Input) -> list[Command]:
        new: list[Command] = []
        for item in inputs:
            self.now_ms += 1000
            for event in w.decide(self.state, item, self.now_ms, self.timings):
                new += self.apply(event)
        self.commands += new
        return new

    def apply(self, event: w.WithdrawalEvent) -> list[Command]:
        before = self.state
        self.state = w.evolve(before, event)
        self.events.append(event)
        return w.react(before, event, self.state, self.timings)

    def restart(self) -> list[Command]:
        """What the shell does after a crash: persist recover's events, then act."""
        self.now_ms += 1000
        events, commands = w.recover(self.state, self.now_ms, self.timings)
        for event in events:
            commands += self.apply(event)
        return commands

    def replayed(self) -> w.WithdrawalState:
        state = w.WithdrawalState()
        for event in self.events:
            state = w.evolve(state, event)
        return state

    def posted(self) -> list[Posting]:
        return [c.posting for c in self.commands if isinstance(c, PostLedger)]

    def postings(self) -> list[str]:
        return [p.name for p in self.posted()]

    def returns(self) -> list[CreditDeriv]:
        return [c for c in self.commands if isinstance(c, CreditDeriv)]

    @property
    def reference(self) -> str:
        assert self.state.deriv_reference is not None
        return self.state.deriv_reference

    @property
    def return_reference(self) -> str:
        assert self.state.return_reference is not None
        return self.state.return_reference


def withdrawn_flow() -> Flow:
    flow = Flow()
    flow.feed(START)
    flow.feed(DerivCredited(flow.reference, 777))
    return flow


def reversing_flow() -> Flow:
    flow = withdrawn_flow()
    flow.feed(B2CAccepted(ORIGINATOR, "AG_1"), B2CResult(ORIGINATOR, "2040", "unregistered"))
    assert flow.state.status is Status.REVERSING
    return flow


def suspended_flow() -> Flow:
    """The payout's outcome stays unknown after every status query."""
    flow = withdrawn_flow()
    flow.feed(B2CUnknown(ORIGINATOR, "read timeout"))
    for _ in range(TIMINGS.b2c_queries_max + 1):
        flow.feed(Deadline("b2c"), B2CResult(ORIGINATOR, None, from_status_query=True))
    assert flow.state.status is Status.NEEDS_REVIEW
    return flow


def net(postings: list[Posting]) -> Counter[tuple[Account, Currency]]:
    """Each account's balance change (debits positive) over ``postings``."""
    balance: Counter[tuple[Account, Currency]] = Counter()
    for posting in postings:
        for leg in posting.legs:
            balance[(leg.debit, leg.currency)] += leg.amount_cents
            balance[(leg.credit, leg.currency)] -= leg.amount_cents
    return balance


def test_the_happy_path_withdraws_once_pays_once_and_books_every_cent() -> None:
    flow = Flow()
    commands = flow.feed(START)
    assert commands == [
        WithdrawFromDeriv(USD, "", f"PenPay withdrawal {TX}"),
        Notify(Status.AWAITING_DERIV_CONFIRMATION),
    ]
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION
    commands = flow.feed(DerivCredited(flow.reference, 777))
    assert flow.state.status is Status.AWAITING_MPESA_DISBURSEMENT
    assert flow.state.deriv_transaction_id == 777
    payout = next(c for c in commands if isinstance(c, PayB2C))
    assert payout == PayB2C(ORIGINATOR, PHONE, KES // 100, "PenPay withdrawal", "tok")
    assert SetTimer("b2c", flow.now_ms + TIMINGS.b2c_result_ms) in commands
    received = next(e for e in flow.events if isinstance(e, w.DerivReceived))
    assert received.originator_conversation_id == ORIGINATOR  # durable before the call
    flow.feed(B2CAccepted(ORIGINATOR, "AG_1"))
    flow.feed(B2CResult(ORIGINATOR, "0", "ok", "SG632NMUAB", KES))
    assert flow.state.status is Status.COMPLETED
    assert flow.state.mpesa_receipt == "SG632NMUAB"
    assert flow.postings() == ["deriv_received", "fx_conversion", "mpesa_paid_out"]
    assert [h.status for h in flow.state.history] == [
        Status.PENDING, Status.AWAITING_DERIV_CONFIRMATION,
        Status.AWAITING_MPESA_DISBURSEMENT, Status.COMPLETED,
    ]
    assert [c.status for c in flow.commands if isinstance(c, Notify)] == [
        Status.AWAITING_DERIV_CONFIRMATION, Status.AWAITING_MPESA_DISBURSEMENT, Status.COMPLETED,
    ]
    fx = flow.posted()[1]
    kes_credits = sum(leg.amount_cents for leg in fx.legs if leg.currency is Currency.KES)
    assert kes_credits == QUOTE.kes_at_mid_cents  # the FX position pays out at mid, all of it
    balance = net(flow.posted())
    assert balance[(Account.DERIV_FLOAT, Currency.USD)] == USD
    assert balance[(Account.MPESA_FLOAT, Currency.KES)] == -KES
    assert balance[(Account.IN_TRANSIT_USD, Currency.USD)] == 0
    assert balance[(Account.IN_TRANSIT_KES, Currency.KES)] == 0
    assert balance[(Account.SPREAD_REVENUE_KES, Currency.KES)] == -QUOTE.spread_cents


@pytest.mark.parametrize("code", ["InvalidToken", "BadSession"])
def test_an_invalid_or_expired_code_fails_with_nothing_moved(code: str) -> None:
    flow = Flow()
    flow.feed(START, DerivRejected(f"PenPay withdrawal {TX}", code, "expired or invalid"))
    assert flow.state.status is Status.FAILED
    assert flow.state.failure is not None
    assert flow.state.failure.code == "verification_code_invalid"
    assert flow.postings() == []
    assert not any(isinstance(c, PayB2C) for c in flow.commands)


def test_deriv_refusing_the_withdrawal_fails_with_nothing_moved() -> None:
    flow = Flow()
    flow.feed(START)
    flow.feed(DerivRejected(flow.reference, "PaymentAgentWithdrawError", "Minimum is 10"))
    assert flow.state.status is Status.FAILED
    assert flow.state.failure is not None and flow.state.failure.code == "deriv_rejected"
    assert flow.postings() == []


def test_socket_drop_during_the_withdrawal_is_settled_when_found() -> None:
    flow = Flow()
    flow.feed(START)
    commands = flow.feed(DerivUnknown(flow.reference, "socket closed"))
    assert commands[0] == FindDerivWithdrawal(
        flow.reference, USD, "CR100001", flow.state.created_at_ms
    )
    flow.feed(DerivLookup(flow.reference, 4242))
    assert flow.state.status is Status.AWAITING_MPESA_DISBURSEMENT
    assert flow.state.deriv_transaction_id == 4242
    assert sum(isinstance(c, WithdrawFromDeriv) for c in flow.commands) == 1  # never resent
    assert sum(isinstance(c, PayB2C) for c in flow.commands) == 1


def test_a_withdrawal_that_provably_never_happened_fails_for_a_new_code() -> None:
    flow = Flow()
    flow.feed(START)
    ref = flow.reference
    flow.feed(DerivUnknown(ref, "socket closed"))
    for _ in range(TIMINGS.deriv_lookups_max):
        assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION
        flow.feed(Deadline("deriv_lookup"), DerivLookup(ref, None))
    assert flow.state.status is Status.FAILED
    assert flow.state.failure is not None
    assert flow.state.failure.code == "deriv_withdrawal_not_made"
    assert sum(isinstance(c, WithdrawFromDeriv) for c in flow.commands) == 1
    assert flow.postings() == []
    assert flow.feed(DerivLookup(ref, 99)) == []  # terminal: late news changes nothing


BUSY = ("PaymentAgentWithdrawError", "Request too frequent. Please try again later.")


def _resend_at(commands: list[Command]) -> int:
    (timer,) = [c for c in commands if isinstance(c, SetTimer) and c.name == "deriv_resend"]
    return timer.at_ms


def test_a_withdrawal_refused_for_now_is_resent_under_the_same_reference() -> None:
    """Regression: a rate limit or BI102 failed the withdrawal although nothing moved
    and the same call would have gone through a little later."""
    flow = Flow()
    flow.feed(START)
    commands = flow.feed(DerivRetryLater(flow.reference, *BUSY))
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION
    assert _resend_at(commands) >= flow.now_ms + TIMINGS.deriv_resend_first_ms
    commands = flow.feed(Deadline("deriv_resend"))
    # No code in the command: the Deriv gateway actor kept it for this resend.
    assert commands == [WithdrawFromDeriv(USD, "", flow.reference)]
    flow.feed(DerivCredited(flow.reference, 777))
    assert flow.state.status is Status.AWAITING_MPESA_DISBURSEMENT


def test_a_withdrawal_refused_for_now_after_every_resend_fails_with_nothing_moved() -> None:
    flow = Flow()
    flow.feed(START)
    for _ in range(TIMINGS.deriv_resends_max):
        flow.feed(DerivRetryLater(flow.reference, *BUSY), Deadline("deriv_resend"))
    assert flow.state.status is Status.AWAITING_DERIV_CONFIRMATION
    flow.feed(DerivRetryLater(flow.reference, "RateLimit", "You have reached the rate limit."))
    assert flow.state.status is Status.FAILED
    assert flow.state.failure is not None and flow.state.failure.code == "deriv_unavailable"
    assert flow.postings() == []
    sent = sum(isinstance(c, WithdrawFromDeriv) for c in flow.commands)
    assert sent == 1 + TIMINGS.deriv_resends_max


def test_a_withdrawal_refused_for_now_while_its_outcome_is_unknown_is_not_resent() -> None:
    flow = Flow()
    flow.feed(START, DerivUnknown(f"PenPay withdrawal {TX}", "socket closed"))
    assert flow.feed(DerivRetryLater(flow.reference, *BUSY)) == []
    assert flow.feed(Deadline("deriv_resend")) == []
    assert sum(isinstance(c, WithdrawFromDeriv) for c in flow.commands) == 1


def test_recovery_with_a_withdrawal_resend_waiting_keeps_waiting() -> None:
    flow = Flow()
    flow.feed(START)
    due = _resend_at(flow.feed(DerivRetryLater(flow.reference, *BUSY)))
    commands = flow.restart()
    assert commands == [SetTimer("deriv_resend", due)]  # nothing went out: no lookup


def test_a_return_refused_for_now_is_resent_then_reviewed() -> None:
    flow = reversing_flow()
    ref = flow.return_reference
    for _ in range(TIMINGS.deriv_resends_max):
        flow.feed(DerivRetryLater(ref, "RateLimit", "slow down"))
        assert flow.feed(Deadline("deriv_resend")) == [flow.returns()[0]]  # the same call
    assert flow.state.status is Status.REVERSING
    flow.feed(DerivRetryLater(ref, "RateLimit", "slow down"))
    assert flow.state.status is Status.NEEDS_REVIEW and flow.state.in_suspense
    assert {c.reference for c in flow.returns()} == {ref}


def test_a_return_resend_waiting_survives_a_restart() -> None:
    flow = reversing_flow()
    due = _resend_at(flow.feed(DerivRetryLater(flow.return_reference, *BUSY)))
    commands = flow.restart()
    assert SetTimer("deriv_resend", due) in commands
    assert not any(isinstance(c, CreditDeriv | FindDerivTransfer) for c in commands)


def test_another_clients_row_with_our_note_does_not_hold_up_the_withdrawal() -> None:
    """A withdrawal's note is the client's free text: a conflict is someone else's row."""
    flow = Flow()
    flow.feed(START)
    ref = flow.reference
    flow.feed(DerivUnknown(ref, "socket closed"))
    for _ in range(TIMINGS.deriv_lookups_max):
        flow.feed(Deadline("deriv_lookup"), DerivLookup(ref, None, "deposit 10.0: CR9 ..."))
        assert flow.state.status is not Status.NEEDS_REVIEW
    assert flow.state.status is Status.FAILED
    assert flow.state.failure is not None
    assert flow.state.failure.code == "deriv_withdrawal_not_made"


def test_a_return_row_with_our_note_but_not_our_transfer_needs_review() -> None:
    """Only the agent writes an "Agent note": our own transfer gone wrong, not absence."""
    flow = reversing_flow()
    ref = flow.return_reference
    flow.feed(DerivUnknown(ref, "socket closed"))
    flow.feed(DerivLookup(ref, None, "withdrawal -5.0: ... to CR9. Agent note: x"))
    assert flow.state.status is Status.NEEDS_REVIEW and flow.state.in_suspense
    assert len(flow.returns()) == 1  # no second attempt


def test_a_failed_payout_returns_the_usd_to_deriv() -> None:
    flow = withdrawn_flow()
    flow.feed(B2CAccepted(ORIGINATOR, "AG_1"))
    commands = flow.feed(B2CResult(ORIGINATOR, "2040", "unregistered customer"))
    assert flow.state.status is Status.REVERSING
    assert flow.state.failure is not None and flow.state.failure.code == "mpesa_payout_failed"
    back = [c for c in commands if isinstance(c, CreditDeriv)]
    assert back == [CreditDeriv("CR100001", USD, f"PenPay withdrawal reversal {TX} attempt 1")]
    flow.feed(DerivCredited(flow.return_reference, 888))
    assert flow.state.status is Status.REVERSED
    assert flow.state.return_transaction_id == 888
    assert flow.postings() == ["deriv_received", "fx_conversion", "fx_reversal", "deriv_returned"]
    assert flow.returns() == back  # exactly one transfer back
    fx, reversal = flow.posted()[1], flow.posted()[2]
    assert [(leg.credit, leg.debit, leg.amount_cents) for leg in reversal.legs] == [
        (leg.debit, leg.credit, leg.amount_cents) for leg in fx.legs
    ]
    assert all(v == 0 for v in net(flow.posted()).values())  # every account back where it was


@pytest.mark.parametrize("code", ["100000000", "17", "26", "15", "9999"])
def test_a_payout_failure_that_may_not_be_final_is_confirmed_before_usd_goes_back(
    code: str,
) -> None:
    """'Cached, waiting for resending', an internal failure, a busy system, a
    duplicate or an unknown code: M-Pesa may still pay, so ask before returning."""
    flow = withdrawn_flow()
    flow.feed(B2CAccepted(ORIGINATOR, "AG_1"))
    assert flow.feed(B2CResult(ORIGINATOR, code, "not final")) == [QueryB2C(ORIGINATOR, "tok")]
    assert flow.feed(B2CResult(ORIGINATOR, code, "not final")) == []  # a repeat asks no more
    assert flow.state.status is Status.AWAITING_MPESA_DISBURSEMENT
    flow.feed(B2CResult(ORIGINATOR, "0", "ok", "R", KES, from_status_query=True))
    assert flow.state.status is Status.COMPLETED
    assert flow.returns() == []


def test_a_not_final_payout_failure_the_status_query_confirms_returns_the_usd() -> None:
    flow = withdrawn_flow()
    flow.feed(B2CAccepted(ORIGINATOR, "AG_1"), B2CResult(ORIGINATOR, "17", "internal failure"))
    flow.feed(B2CResult(ORIGINATOR, "status Failed", "", from_status_query=True,
                        payout_failed=True))
    assert flow.state.status is Status.REVERSING
    assert len(flow.returns()) == 1


def test_a_refused_resend_proves_nothing_about_the_first_send() -> None:
    """The first send's answer was lost and M-Pesa cannot show it yet; the resend (same id)
    meets a spike arrest. The first may still pay, so no USD goes back."""
    flow = withdrawn_flow()
    flow.feed(B2CUnknown(ORIGINATOR, "no answer within 30 s"))
    flow.feed(B2CResult(ORIGINATOR, "2032", "does not exist", from_status_query=True))
    assert sum(isinstance(c, PayB2C) for c in flow.commands) == 2  # resent, same id
    assert flow.feed(B2CRejected(ORIGINATOR, "500.003.02", "Spike Arrest Violation")) == []
    flow.feed(B2CResult(ORIGINATOR, "0", "ok", "R", KES))  # the first send paid
    assert flow.state.status is Status.COMPLETED
    assert flow.returns() == []


def test_a_sync_rejection_of_the_payout_returns_the_usd() -> None:
    flow = withdrawn_flow()
    flow.feed(B2CRejected(ORIGINATOR, "400.002.02", "Invalid Amount"))
    assert flow.state.status is Status.REVERSING
    assert flow.state.failure is not None and flow.state.failure.code == "mpesa_payout_rejected"
    assert len(flow.returns()) == 1


def test_a_duplicate_originator_rejection_is_settled_by_a_status_query() -> None:
    flow = withdrawn_flow()
    commands = flow.feed(B2CRejected(ORIGINATOR, "500.002.1001", "Duplicate"))
    assert commands == [QueryB2C(ORIGINATOR, "tok")]
    flow.feed(B2CResult(ORIGINATOR, "0", "ok", "R", KES, from_status_query=True))
    assert flow.state.status is Status.COMPLETED
    assert flow.returns() == []


def test_a_missing_result_is_settled_by_a_status_query_that_finds_it_paid() -> None:
    flow = withdrawn_flow()
    flow.feed(B2CAccepted(ORIGINATOR, "AG_1"))
    commands = flow.feed(Deadline("b2c"))
    assert [type(c) for c in commands] == [QueryB2C, SetTimer]
    flow.feed(B2CResult(ORIGINATOR, None, from_status_query=True))
    assert flow.state.status is Status.AWAITING_MPESA_DISBURSEMENT
    flow.feed(B2CResult(ORIGINATOR, "0", "ok", "R", KES, from_status_query=True))
    assert flow.state.status is Status.COMPLETED


def test_a_payout_m_pesa_never_saw_is_resent_with_the_same_originator() -> None:
    flow = withdrawn_flow()
    flow.feed(B2CUnknown(ORIGINATOR, "read timeout"))
    commands = flow.feed(B2CResult(ORIGINATOR, "2001", "not found", from_status_query=True))
    payouts = [c for c in flow.commands if isinstance(c, PayB2C)]
    assert len(payouts) == 2 and payouts[0] == payouts[1]
    assert any(isinstance(c, SetTimer) for c in commands)
    assert flow.state.status is Status.AWAITING_MPESA_DISBURSEMENT
    flow.feed(B2CAccepted(ORIGINATOR, "AG_2"), B2CResult(ORIGINATOR, "0", "ok", "R", KES))
    assert flow.state.status is Status.COMPLETED


def test_a_status_query_reporting_a_failed_payout_returns_the_usd() -> None:
    flow = withdrawn_flow()
    flow.feed(B2CAccepted(ORIGINATOR, "AG_1"), Deadline("b2c"))
    flow.feed(B2CResult(ORIGINATOR, "status Failed", "", from_status_query=True,
                        payout_failed=True))
    assert flow.state.status is Status.REVERSING
    assert len(flow.returns()) == 1


def test_a_status_query_that_cannot_find_an_accepted_payout_returns_nothing() -> None:
    """M-Pesa took the request: it may still pay, so the USD must not go back."""
    flow = withdrawn_flow()
    flow.feed(B2CAccepted(ORIGINATOR, "AG_1"), Deadline("b2c"))
    flow.feed(B2CResult(ORIGINATOR, "2032", "does not exist", from_status_query=True))
    assert flow.state.status is Status.AWAITING_MPESA_DISBURSEMENT
    assert flow.returns() == []
    flow.feed(B2CResult(ORIGINATOR, "0", "ok", "R", KES))  # the payout's own result, late
    assert flow.state.status is Status.COMPLETED


def test_a_status_answer_overtaking_a_slow_payout_resends_it_and_never_returns() -> None:
    """The payout request is slow to reach M-Pesa; the status query outruns it."""
    flow = withdrawn_flow()
    flow.feed(Deadline("b2c"))  # no answer to the payout yet
    flow.feed(B2CResult(ORIGINATOR, "2032", "does not exist", from_status_query=True))
    flow.feed(B2CRejected(ORIGINATOR, w.DUPLICATE_ORIGINATOR, "duplicate"))
    flow.feed(B2CResult(ORIGINATOR, "0", "ok", "R", KES))
    assert flow.state.status is Status.COMPLETED
    assert flow.returns() == []
    payouts = [c for c in flow.commands if isinstance(c, PayB2C)]
    assert len(payouts) == 2 and payouts[0] == payouts[1]  # same originator: paid once


def test_an_unknown_payout_after_every_query_needs_review_with_the_kes_in_suspense() -> None:
    flow = suspended_flow()
    assert flow.state.in_suspense
    assert flow.postings() == ["deriv_received", "fx_conversion", "suspense_in"]
    suspense = flow.posted()[-1]
    assert [(leg.debit, leg.credit, leg.amount_cents) for leg in suspense.legs] == [
        (Account.IN_TRANSIT_KES, Account.SUSPENSE_KES, KES)
    ]
    # Anything short of M-Pesa saying it paid waits for a human.
    assert flow.feed(B2CResult(ORIGINATOR, None, from_status_query=True)) == []
    assert flow.feed(B2CResult(ORIGINATOR, "2032", "does not exist", from_status_query=True)) == []


def test_duplicate_and_late_answers_change_nothing() -> None:
    flow = withdrawn_flow()
    flow.feed(B2CAccepted(ORIGINATOR, "AG_1"))
    events = len(flow.events)
    for dup in (DerivCredited(flow.reference, 777), DerivLookup(flow.reference, 777),
                DerivRejected(flow.reference, "InvalidToken", "x"),
                B2CAccepted(ORIGINATOR, "AG_1"), B2CRejected(ORIGINATOR, "400.002.02", "late"),
                B2CResult("PPWother", "1", "not ours"), DerivCredited("PenPay other", 1)):
        assert flow.feed(dup) == []
    assert len(flow.events) == events
    flow.feed(B2CResult(ORIGINATOR, "0", "ok", "R1", KES))
    done = flow.state
    for late in (B2CResult(ORIGINATOR, "0", "ok", "R2", KES), B2CResult(ORIGINATOR, "1", "no"),
                 B2CUnknown(ORIGINATOR, "queue timeout"), Deadline("b2c"),
                 DerivCredited(flow.reference, 2), START):
        assert flow.feed(late) == []
    assert flow.state == done and flow.state.mpesa_receipt == "R1"
    assert flow.postings().count("mpesa_paid_out") == 1


def test_a_return_whose_answer_is_lost_is_looked_up_then_retried() -> None:
    flow = reversing_flow()
    first = flow.return_reference
    commands = flow.feed(DerivUnknown(first, "socket closed"))
    sent_at = flow.state.return_sent_at_ms
    assert sent_at > flow.state.created_at_ms  # the statement is read from the return on
    assert commands[0] == FindDerivTransfer(first, USD, "CR100001", sent_at)
    for _ in range(TIMINGS.deriv_lookups_max):
        flow.feed(Deadline("deriv_lookup"), DerivLookup(first, None))
    second = flow.return_reference
    assert second.endswith("attempt 2")
    assert [c.reference for c in flow.returns()] == [first, second]
    assert flow.feed(DerivLookup(first, 5)) == []  # news about the old attempt is ignored
    flow.feed(DerivCredited(second, 6))
    assert flow.state.status is Status.REVERSED
    assert flow.postings().count("fx_reversal") == 1


def test_a_refused_return_needs_review_with_the_usd_in_suspense() -> None:
    flow = reversing_flow()
    flow.feed(DerivRejected(flow.return_reference, "PaymentAgentTransferError", "no"))
    assert flow.state.status is Status.NEEDS_REVIEW and flow.state.in_suspense
    assert flow.postings()[-1] == "suspense_in_usd_1"
    assert flow.posted()[-1].legs[0].currency is Currency.USD


def test_operator_resolution_rules() -> None:
    flow = suspended_flow()
    with pytest.raises(ResolveRefused, match="cannot fail"):
        w.decide(flow.state, Resolve("fail", "x", "op"), 0, TIMINGS)
    with pytest.raises(ResolveRefused, match="unknown action"):
        w.decide(flow.state, Resolve("shrug", "x", "op"), 0, TIMINGS)
    commands = flow.feed(Resolve("complete", "paid per M-Pesa statement", "op@penpay"))
    assert flow.state.status is Status.COMPLETED
    assert [c.posting.name for c in commands if isinstance(c, PostLedger)] == [
        "suspense_out", "mpesa_paid_out",
    ]
    with pytest.raises(ResolveRefused, match="not NEEDS_REVIEW"):
        w.decide(flow.state, Resolve("reverse", "x", "op"), 0, TIMINGS)
    with pytest.raises(ResolveRefused, match="not NEEDS_REVIEW"):
        w.decide(withdrawn_flow().state, Resolve("complete", "x", "op"), 0, TIMINGS)


def test_an_operator_reversal_unsuspends_and_returns_the_usd() -> None:
    flow = suspended_flow()
    commands = flow.feed(Resolve("reverse", "M-Pesa says never paid", "op"))
    assert flow.state.status is Status.REVERSING
    assert [c.posting.name for c in commands if isinstance(c, PostLedger)] == [
        "suspense_out", "fx_reversal",
    ]
    flow.feed(DerivRejected(flow.return_reference, "PaymentAgentTransferError", "no"))
    with pytest.raises(ResolveRefused, match="being returned"):
        w.decide(flow.state, Resolve("complete", "x", "op"), 0, TIMINGS)
    commands = flow.feed(Resolve("reverse", "client account reopened", "op"))
    assert [c.posting.name for c in commands if isinstance(c, PostLedger)] == [
        "suspense_out_usd_1"
    ]
    assert flow.return_reference.endswith("attempt 2")
    flow.feed(DerivCredited(flow.return_reference, 9))
    assert flow.state.status is Status.REVERSED
    assert all(v == 0 for v in net(flow.posted()).values())


def test_fail_is_only_for_money_that_never_moved() -> None:
    # No flow parks a withdrawal in review before Deriv moved the money; the rule
    # still holds for an operator who meets one.
    state = w.evolve(w.WithdrawalState(), w.Created(0, TX, "u1", PHONE, "CR1", QUOTE, "t", "ref"))
    state = w.evolve(state, w.ReviewNeeded(1, "test"))
    assert not state.in_suspense
    events = w.decide(state, Resolve("fail", "never moved", "op"), 2, TIMINGS)
    assert [type(e) for e in events] == [w.Resolved, w.Failed]
    for action in ("complete", "reverse"):
        with pytest.raises(ResolveRefused):
            w.decide(state, Resolve(action, "x", "op"), 2, TIMINGS)


def test_the_verification_code_is_never_persisted() -> None:
    flow = Flow()
    flow.feed(START, DerivUnknown(f"PenPay withdrawal {TX}", "drop"))
    flow.feed(DerivLookup(flow.reference, 1), B2CResult(ORIGINATOR, "1", "failed"))
    flow.feed(DerivCredited(flow.return_reference, 2))
    assert flow.state.status is Status.REVERSED
    for event in flow.events:
        assert CODE.encode() not in CODEC.encode(event)
    assert CODE.encode() not in CODEC.encode(flow.state)
    assert all(c.verification_code == "" for c in flow.commands
               if isinstance(c, WithdrawFromDeriv))
    assert CODE not in repr(START) and CODE not in repr(list(START.__rich_repr__()))


def test_start_is_idempotent() -> None:
    flow = Flow()
    flow.feed(START)
    assert flow.feed(START) == []


def test_recovery_never_resends_the_withdrawal() -> None:
    flow = Flow()
    flow.feed(START)
    events, commands = w.recover(flow.state, flow.now_ms, TIMINGS)
    assert [type(e) for e in events] == [w.DerivWithdrawUnknown]
    assert commands == []
    follow_up = flow.restart()
    assert not any(isinstance(c, WithdrawFromDeriv) for c in follow_up)
    lookup = FindDerivWithdrawal(flow.reference, USD, "CR100001", flow.state.created_at_ms)
    assert lookup in follow_up
    again = flow.restart()  # already unknown: just look it up again
    assert not any(isinstance(c, WithdrawFromDeriv) for c in again)
    assert lookup in again
    assert [type(e) for e in flow.events].count(w.DerivWithdrawUnknown) == 1


def test_recovery_resends_the_payout_with_the_same_originator() -> None:
    flow = withdrawn_flow()
    first = next(c for c in flow.commands if isinstance(c, PayB2C))
    commands = flow.restart()
    assert [c.posting.name for c in commands if isinstance(c, PostLedger)] == [
        "deriv_received", "fx_conversion",
    ]
    assert [c for c in commands if isinstance(c, PayB2C)] == [first]
    flow.feed(B2CAccepted(ORIGINATOR, "AG_1"))
    commands = flow.restart()
    assert not any(isinstance(c, PayB2C) for c in commands)  # accepted: ask, do not resend
    assert QueryB2C(ORIGINATOR, "tok") in commands


def test_recovery_never_resends_a_return() -> None:
    flow = reversing_flow()
    commands = flow.restart()
    assert flow.returns() and not any(isinstance(c, CreditDeriv) for c in commands)
    lookup = FindDerivTransfer(
        flow.return_reference, USD, "CR100001", flow.state.return_sent_at_ms
    )
    assert lookup in commands
    assert flow.state.return_unknown
    assert "fx_reversal" in [c.posting.name for c in commands if isinstance(c, PostLedger)]


# --------------------------------------------------------------- property test


class Restart(Input, frozen=True, tag="test_restart"):
    """Not a real input: the actor stops and recovers here."""


#: Short patience, so random runs reach review (and its resolutions) often.
FAST = SagaTimings(deriv_lookups_max=1, b2c_queries_max=2, deriv_resends_max=1)

#: Stand-ins for the references a transaction has only once it has run a while.
WITHDRAW_REF, RETURN_REF = "@withdraw", "@return"


def _bound(item: Input, state: w.WithdrawalState) -> Input:
    """Swap the stand-ins for the live references (drawn once, bound at feed time)."""
    reference = getattr(item, "reference", None)
    if reference == WITHDRAW_REF:
        return msgspec.structs.replace(item, reference=state.deriv_reference)
    if reference == RETURN_REF:
        live = state.return_reference or "none"
        return msgspec.structs.replace(item, reference=live)
    return item


_REFS = st.sampled_from([WITHDRAW_REF, RETURN_REF, "PenPay withdrawal other"])
_OIDS = st.sampled_from([ORIGINATOR, "other"])
INPUTS: st.SearchStrategy[Input] = st.one_of(
    st.builds(Deadline, st.sampled_from(["deriv_lookup", "b2c", "deriv_resend"])),
    st.builds(DerivCredited, _REFS, st.integers(1, 5)),
    st.builds(
        DerivRejected, _REFS,
        st.sampled_from(["InvalidToken", "BadSession", "PaymentAgentWithdrawError",
                         "PaymentAgentTransferError"]),
        st.just("no"),
    ),
    st.builds(DerivUnknown, _REFS, st.just("drop")),
    st.builds(
        DerivRetryLater, _REFS, st.sampled_from(["RateLimit", "PaymentAgentWithdrawError"]),
        st.just("Request too frequent. Please try again later."),
    ),
    st.builds(
        DerivLookup, _REFS, st.sampled_from([None, None, 9]), st.sampled_from([None, None, "x"])
    ),
    st.builds(B2CAccepted, _OIDS, st.sampled_from(["AG", "AG2"])),
    st.builds(B2CRejected, _OIDS, st.sampled_from(["500.002.1001", "400.002.02"]), st.just("x")),
    st.builds(B2CUnknown, _OIDS, st.just("timeout")),
    st.builds(
        B2CResult, _OIDS, st.sampled_from([None, "0", "1", "2001"]), st.just(""), st.just("R"),
        st.just(KES), st.booleans(),
    ),
    st.builds(
        Resolve, st.sampled_from(["complete", "reverse", "fail"]), st.just("n"), st.just("op")
    ),
    st.just(Restart()),
)


def _check_posting(posting: Posting) -> None:
    assert posting.legs
    for leg in posting.legs:  # every leg moves money from one account to another
        assert leg.amount_cents > 0 and leg.debit is not leg.credit
    by_currency = Counter[Currency]()
    for leg in posting.legs:
        by_currency[leg.currency] += leg.amount_cents
    assert all(total > 0 for total in by_currency.values())
    kes = by_currency[Currency.KES]
    usd = by_currency[Currency.USD]
    if posting.name in ("fx_conversion", "fx_reversal"):
        assert kes == QUOTE.kes_at_mid_cents and usd == USD
    elif posting.name.startswith(("deriv_", "suspense_in_usd", "suspense_out_usd")):
        assert (kes, usd) == (0, USD)
    else:
        assert (kes, usd) == (KES, 0)


def _in_recovery_order(names: list[str]) -> list[str]:
    """The order first issued, but for the paid-after-return posting: last."""
    late = [n for n in names if n == "mpesa_paid_after_return"]
    return [n for n in names if n != "mpesa_paid_after_return"] + late


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_any_sequence_of_inputs_keeps_the_invariants(data: Any) -> None:
    flow = Flow(FAST)
    flow.feed(START)
    # Start some runs further along, so the later stages see as many inputs as the first.
    head = data.draw(st.sampled_from(["fresh", "withdrawn", "paying out", "reversing"]))
    if head != "fresh":
        flow.feed(DerivCredited(flow.reference, 1))
    if head == "paying out":
        flow.feed(B2CUnknown(ORIGINATOR, "timeout"))
    if head == "reversing":
        flow.feed(B2CResult(ORIGINATOR, "1", "failed"))
    for _ in range(data.draw(st.integers(0, 40))):
        item = _bound(data.draw(INPUTS), flow.state)
        before = flow.state
        if isinstance(item, Restart):
            commands = flow.restart()
            assert not any(isinstance(c, WithdrawFromDeriv | CreditDeriv) for c in commands)
            assert all(c.originator_conversation_id == ORIGINATOR
                       for c in commands if isinstance(c, PayB2C))
            if before.status not in (Status.COMPLETED, Status.FAILED, Status.REVERSED):
                # Recovery re-issues exactly the ledger steps already taken, in order.
                reissued = [c.posting.name for c in commands if isinstance(c, PostLedger)]
                assert reissued == _in_recovery_order(flow.postings())
            continue
        try:
            flow.feed(item)
        except ResolveRefused:
            assert flow.state == before
        if before.status in (Status.COMPLETED, Status.FAILED, Status.REVERSED):
            if flow.state.paid_after_return and not before.paid_after_return:
                # The one news a terminal withdrawal still takes: M-Pesa paid after all.
                assert isinstance(item, B2CResult) and item.result_code == "0"
                assert flow.state.status is before.status is Status.REVERSED
            else:
                assert flow.state == before, "a terminal transaction changed"
    postings = Counter(flow.postings())
    # Each ledger step is issued at most once (re-issue only happens on recovery).
    assert all(n == 1 for n in postings.values()), postings
    assert not (postings["mpesa_paid_out"] and postings["deriv_returned"])
    for posting in flow.posted():
        _check_posting(posting)
    withdrawals = [c.reference for c in flow.commands if isinstance(c, WithdrawFromDeriv)]
    assert set(withdrawals) == {f"PenPay withdrawal {TX}"}
    _assert_resent_only_after_a_refusal_for_now(flow, withdrawals)
    assert all(c.verification_code == "" for c in flow.commands
               if isinstance(c, WithdrawFromDeriv))
    payouts = {c.originator_conversation_id for c in flow.commands if isinstance(c, PayB2C)}
    assert payouts <= {ORIGINATOR}  # one payout identity, however often it is (safely) resent
    if payouts:
        assert postings["fx_conversion"] == 1  # no shillings out before the USD came in
    returns = flow.returns()
    _assert_resent_only_after_a_refusal_for_now(flow, [c.reference for c in returns])
    if returns:
        assert postings["fx_reversal"] == 1
    status = flow.state.status
    if status is Status.COMPLETED:
        assert postings["deriv_received"] == postings["fx_conversion"] == 1
        assert postings["mpesa_paid_out"] == 1
    paid_twice = Counter[tuple[Account, Currency]]()
    if flow.state.paid_after_return:
        assert postings["fx_reversal"] == postings["mpesa_paid_after_return"] == 1
        paid_twice = Counter({(Account.SUSPENSE_KES, Currency.KES): KES,
                              (Account.MPESA_FLOAT, Currency.KES): -KES})
    else:
        assert not postings["mpesa_paid_after_return"]
    if status is Status.REVERSED:
        assert postings["fx_reversal"] == postings["deriv_returned"] == 1
        assert +net(flow.posted()) == +paid_twice and -net(flow.posted()) == -paid_twice
    if status is Status.FAILED:
        assert not postings
    if status in (Status.COMPLETED, Status.REVERSED):
        balance = net(flow.posted())
        assert balance[(Account.IN_TRANSIT_KES, Currency.KES)] == 0
        assert balance[(Account.IN_TRANSIT_USD, Currency.USD)] == 0
        assert balance[(Account.SUSPENSE_KES, Currency.KES)] == paid_twice[
            (Account.SUSPENSE_KES, Currency.KES)]
        assert balance[(Account.SUSPENSE_USD, Currency.USD)] == 0
    assert [p.name for p in w.ledger_so_far(flow.state)] == _in_recovery_order(flow.postings())
    assert flow.replayed() == flow.state
    for event in flow.events:
        assert CODE.encode() not in CODEC.encode(event)


#: What Deriv (and the timers around it) can say to the withdrawal or the return.
DERIV_ANSWERS: list[Input] = [
    *[DerivRetryLater(ref, *BUSY) for ref in (WITHDRAW_REF, RETURN_REF)] * 3,
    *[Deadline("deriv_resend")] * 6,
    *[DerivUnknown(ref, "drop") for ref in (WITHDRAW_REF, RETURN_REF)],
    *[DerivLookup(ref, None) for ref in (WITHDRAW_REF, RETURN_REF)],
    *[DerivLookup(ref, None, "x") for ref in (WITHDRAW_REF, RETURN_REF)],
    *[DerivCredited(ref, 5) for ref in (WITHDRAW_REF, RETURN_REF)],
    *[DerivRejected(ref, "PaymentAgentWithdrawError", "no") for ref in (WITHDRAW_REF, RETURN_REF)],
    Deadline("deriv_lookup"),
    Restart(),
]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.booleans(), st.lists(st.sampled_from(DERIV_ANSWERS), max_size=30))
def test_deriv_answers_in_any_order_never_resend_a_call_that_may_have_moved_money(
    returning: bool, answers: list[Input],
) -> None:
    """The Deriv stages alone, where a resend under the same reference is possible."""
    flow = Flow(FAST)
    flow.feed(START)
    if returning:  # the payout failed: the USD goes back (the return stage)
        flow.feed(DerivCredited(flow.reference, 1), B2CResult(ORIGINATOR, "1", "failed"))
    for answer in answers:
        item = _bound(answer, flow.state)
        if isinstance(item, Restart):
            commands = flow.restart()
            assert not any(isinstance(c, WithdrawFromDeriv | CreditDeriv) for c in commands)
            continue
        flow.feed(item)
    withdrawals = [c.reference for c in flow.commands if isinstance(c, WithdrawFromDeriv)]
    _assert_resent_only_after_a_refusal_for_now(flow, withdrawals)
    _assert_resent_only_after_a_refusal_for_now(flow, [c.reference for c in flow.returns()])
    if flow.state.status is Status.FAILED:
        assert not flow.postings()
    assert flow.replayed() == flow.state


def _assert_resent_only_after_a_refusal_for_now(flow: Flow, sent: list[str]) -> None:
    assert_resent_only_after_a_refusal_for_now(
        flow.events, sent, resent=w.DerivResent, deferred=w.DerivDeferred,
        unknown=(w.DerivWithdrawUnknown, w.ReturnUnknown),
    )


def test_a_payout_paid_while_parked_completes_the_withdrawal() -> None:
    """The payout's outcome stayed unknown through every query; M-Pesa's success arrives
    while it is parked. The shillings left: it completes, and no USD can go back."""
    flow = suspended_flow()
    flow.feed(B2CResult(ORIGINATOR, "0", "ok", "PAYRCPT", KES))
    assert flow.state.status is Status.COMPLETED and not flow.state.in_suspense
    assert flow.returns() == []
    with pytest.raises(ResolveRefused, match="not NEEDS_REVIEW"):
        w.decide(flow.state, Resolve("reverse", "x", "op"), flow.now_ms, TIMINGS)
    assert all(v == 0 for (account, _), v in net(flow.posted()).items()
               if account in (Account.SUSPENSE_KES, Account.IN_TRANSIT_KES))


def _parked_return() -> Flow:
    """An operator reversed a withdrawal whose payout was unknown; Deriv then
    refused the transfer back, so it is parked again with the USD in suspense."""
    flow = suspended_flow()
    flow.feed(Resolve("reverse", "M-Pesa statement shows nothing", "op"))
    flow.feed(DerivRejected(flow.return_reference, "PaymentAgentTransferError", "no"))
    assert flow.state.status is Status.NEEDS_REVIEW and flow.state.fx_reversed
    return flow


@pytest.mark.parametrize("stage", ["reversing", "reversed", "parked"])
def test_a_payout_paid_after_the_return_began_is_booked_and_raised(stage: str) -> None:
    """The user now has the shillings and the USD: PenPay's float paid out all the
    same, so the ledger says so (what the user owes sits in suspense), and an
    operator is told. The return itself goes on."""
    flow = _parked_return() if stage == "parked" else suspended_flow()
    if stage != "parked":
        flow.feed(Resolve("reverse", "M-Pesa statement shows nothing", "op"))
    if stage == "reversed":
        flow.feed(DerivCredited(flow.return_reference, 9))
    before = flow.state
    commands = flow.feed(B2CResult(ORIGINATOR, "0", "ok", "LATERCPT", KES))
    assert flow.state.status is before.status
    assert flow.state.paid_after_return and flow.state.mpesa_receipt == "LATERCPT"
    assert [c.posting.name for c in commands if isinstance(c, PostLedger)] == [
        "mpesa_paid_after_return"
    ]
    alert = next(c for c in commands if isinstance(c, Alert))
    assert "paid twice" in alert.message and "LATERCPT" in alert.message
    assert any(isinstance(c, Notify) for c in commands)
    # Once only: a duplicate callback or a status answer books nothing more.
    assert flow.feed(B2CResult(ORIGINATOR, "0", "ok", "LATERCPT", KES)) == []
    assert flow.returns()[-1].reference == flow.return_reference  # the return went on
    if stage == "reversing":
        flow.feed(DerivCredited(flow.return_reference, 9))
        assert flow.state.status is Status.REVERSED
    balance = net(flow.posted())
    assert balance[(Account.MPESA_FLOAT, Currency.KES)] == -KES
    assert balance[(Account.SUSPENSE_KES, Currency.KES)] == KES
    assert [p.name for p in w.ledger_so_far(flow.state)] == _in_recovery_order(flow.postings())
    assert flow.replayed() == flow.state


def test_a_failed_or_foreign_payout_result_after_the_return_changes_nothing() -> None:
    flow = suspended_flow()
    flow.feed(Resolve("reverse", "M-Pesa statement shows nothing", "op"))
    assert flow.feed(B2CResult(ORIGINATOR, "2001", "wrong")) == []
    assert flow.feed(B2CResult("PPWsomeoneelse", "0", "ok", "X", KES)) == []
    assert not flow.state.paid_after_return
