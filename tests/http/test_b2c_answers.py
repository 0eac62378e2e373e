"""How Daraja's B2C and Transaction Status answers read to a transaction.

A failed *query* must never read as a failed *payout*: money would go back
to Deriv while M-Pesa still pays the customer.
"""

from __future__ import annotations

from typing import Any

import msgspec

from penpay.http.callbacks import _b2c_input
from penpay.sandbox.daraja import wire

TX = "0193a000-0000-7000-8000-000000000001"


def body(result: dict[str, Any]) -> bytes:
    return msgspec.json.encode({"Result": result})


def status_answer(code: int, status: str | None = None) -> bytes:
    result: dict[str, Any] = {
        "ResultType": 0, "ResultCode": code, "ResultDesc": "desc",
        "OriginatorConversationID": "q-1", "ConversationID": "AG_q", "TransactionID": "",
    }
    if status is not None:
        result["ResultParameters"] = {"ResultParameter": [
            {"Key": "TransactionStatus", "Value": status},
            {"Key": "ReceiptNo", "Value": "SAB123"},
            {"Key": "Amount", "Value": "1500"},
        ]}
    return body(result)


def test_no_such_payout_is_not_a_failed_payout() -> None:
    answer = msgspec.json.encode(wire.transaction_status_result(
        None, originator_conversation_id="q-1", conversation_id="AG_q",
        b2c_shortcode="600992", customer_name="Jane",
    ))
    message = _b2c_input(answer, TX, status_answer=True)
    assert message.from_status_query and not message.payout_failed
    assert message.result_code == "2032"


def test_a_completed_payout_by_status_query() -> None:
    message = _b2c_input(status_answer(0, "Completed"), TX, status_answer=True)
    assert (message.result_code, message.receipt, message.amount_kes_cents) == (
        "0", "SAB123", 150_000
    )


def test_a_payout_reported_failed_by_status_query_is_a_failure() -> None:
    message = _b2c_input(status_answer(0, "Failed"), TX, status_answer=True)
    assert message.payout_failed and message.result_code != "0"


def test_a_payout_still_pending_is_no_answer_yet() -> None:
    message = _b2c_input(status_answer(0, "Pending"), TX, status_answer=True)
    assert message.result_code is None and not message.payout_failed


def test_the_payouts_own_failure_is_a_failure() -> None:
    message = _b2c_input(body({
        "ResultType": 0, "ResultCode": 2001, "ResultDesc": "The initiator information is invalid.",
        "OriginatorConversationID": "PPW1", "ConversationID": "AG_1", "TransactionID": "",
    }), TX, status_answer=False)
    assert (message.result_code, message.from_status_query) == ("2001", False)


def _naming(originator: str) -> bytes:
    return body({
        "ResultType": 0, "ResultCode": 0, "ResultDesc": "desc",
        "OriginatorConversationID": "q-1", "ConversationID": "AG_q", "TransactionID": "",
        "ResultParameters": {"ResultParameter": [
            {"Key": "OriginatorConversationID", "Value": originator},
            {"Key": "TransactionStatus", "Value": "Failed"},
        ]},
    })


def test_a_status_answer_is_about_the_payout_of_ours_it_names() -> None:
    ours = "PPR" + TX.replace("-", "") + "N2"
    assert _b2c_input(_naming(ours), TX, status_answer=True).originator_conversation_id == ours


def test_a_status_answer_naming_a_foreign_id_is_about_the_current_payout() -> None:
    """protocols.md 1.5: the id in a result is not always ours; then it cannot say which."""
    foreign = _b2c_input(_naming("29112-34801843-1"), TX, status_answer=True)
    assert foreign.originator_conversation_id == ""  # the actor fills in its current payout
