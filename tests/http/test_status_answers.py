"""A Transaction Status answer is about the payout it names, not whatever is current.

A refund M-Pesa refused for good can be sent again under a new id; a late
status answer about the first attempt must not be taken for the second.
"""

from __future__ import annotations

from types import SimpleNamespace

from penpay.actors.saga import B2CAccepted, B2CResult, Deadline, QueryB2C, Resolve, Status
from penpay.actors.transaction import DepositActor
from penpay.http.callbacks import _b2c_input
from tests.actors.test_deposit_flow import KES, Flow, _refunding


def _status_answer(originator: str, status: str) -> bytes:
    return (
        '{"Result":{"ResultType":0,"ResultCode":0,"ResultDesc":"The service request is '
        'processed successfully.","OriginatorConversationID":"TS-' + originator + '",'
        '"ConversationID":"AG_TS","TransactionID":"SGX","ResultParameters":{"ResultParameter":['
        '{"Key":"OriginatorConversationID","Value":"' + originator + '"},'
        '{"Key":"TransactionStatus","Value":"' + status + '"},'
        '{"Key":"Amount","Value":"' + str(KES // 100) + '"}]}}}'
    ).encode()


def _result(originator: str, code: int) -> bytes:
    """A B2C result callback, as Daraja POSTs it to the payout's ResultURL."""
    return (
        '{"Result":{"ResultType":0,"ResultCode":' + str(code) + ',"ResultDesc":"The initiator '
        'information is invalid.","OriginatorConversationID":"' + originator + '",'
        '"ConversationID":"AG_R","TransactionID":"SXX"}}'
    ).encode()


def _deliver(flow: Flow, body: bytes, *, status_answer: bool = True) -> None:
    """What the route builds, addressed as the actor addresses it, decided by the flow."""
    shell = SimpleNamespace(flow=DepositActor.flow, state=flow.state)
    answer = _b2c_input(body, flow.state.transaction_id, status_answer=status_answer)
    flow.feed(DepositActor._addressed(shell, answer))  # type: ignore[arg-type]


def test_a_late_answer_about_the_first_refund_attempt_leaves_the_second_alone() -> None:
    flow, first = _refunding()
    flow.feed(B2CAccepted(first, "AG_1"))
    assert QueryB2C(first, "tok") in flow.feed(Deadline("b2c"))  # asks about attempt 1
    flow.feed(B2CResult(first, "1", "The balance is insufficient"))  # attempt 1 failed
    flow.feed(Resolve("reverse", "utility account topped up", "op@penpay"))
    second = flow.state.refund_originator_id
    assert second == f"{first}N2"
    _deliver(flow, _status_answer(first, "Failed"))  # the late answer about attempt 1
    assert flow.state.status is Status.REVERSING
    _deliver(flow, _status_answer(second, "Completed"))
    assert flow.state.status is Status.REVERSED


def test_a_late_result_callback_about_the_first_refund_attempt_leaves_the_second_alone() -> None:
    """Every attempt reports to the same ResultURL. The result route dropped the id
    the callback names, so attempt 1's late 2001 was taken for attempt 2 failing for
    good (review, then a third refund while the second could still pay)."""
    flow, first = _refunding()
    flow.feed(B2CAccepted(first, "AG_1"))
    flow.feed(B2CResult(first, "status Failed", "", from_status_query=True, payout_failed=True))
    flow.feed(Resolve("reverse", "utility account topped up", "op@penpay"))
    second = flow.state.refund_originator_id
    assert second == f"{first}N2"
    flow.feed(B2CAccepted(second, "AG_2"))
    _deliver(flow, _result(first, 2001), status_answer=False)  # late, about attempt 1
    assert flow.state.status is Status.REVERSING and not flow.state.refund_failed
    _deliver(flow, _result("not-ours-at-all", 0), status_answer=False)  # no id of ours:
    assert flow.state.status is Status.REVERSED  # the current attempt, as before
