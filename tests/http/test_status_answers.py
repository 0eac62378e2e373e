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


def _deliver(flow: Flow, body: bytes) -> None:
    """What the route builds, addressed as the actor addresses it, decided by the flow."""
    shell = SimpleNamespace(flow=DepositActor.flow, state=flow.state)
    answer = _b2c_input(body, flow.state.transaction_id, status_answer=True)
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
