"""Daraja payloads, built with the exact JSON types Safaricom sends.

Numbers stay numbers and strings stay strings as in protocols.md 1.3-1.7:
the STK callback carries ``ResultCode``/``TransactionDate``/``PhoneNumber`` as
numbers and ``Amount`` as a decimal number (``1.00``); the STK Query carries
``ResultCode`` as a string; B2C results carry numbers; Account Balance results
carry ``ResultCode`` as a string. Amounts are ``Decimal`` and encoded as JSON
numbers by :data:`ENCODER`, never as floats.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from penpay.sandbox.daraja.state import (
    NAIROBI,
    Accounts,
    B2CPayment,
    StkTransaction,
)

ENCODER = msgspec.json.Encoder(decimal_format="number")

Json = dict[str, Any]


def kes(amount_cents: int) -> Decimal:
    """Cents as a two-decimal KES amount (``100`` -> ``Decimal("1.00")``)."""
    return Decimal(amount_cents).scaleb(-2).quantize(Decimal("0.01"))


def eat_stamp(wall: datetime) -> str:
    """``YYYYMMDDHHmmss`` in Nairobi time."""
    return f"{wall.astimezone(NAIROBI):%Y%m%d%H%M%S}"


def error(request_id: str, code: str, message: str) -> Json:
    """The synchronous error envelope (protocols.md 1.9)."""
    return {"requestId": request_id, "errorCode": code, "errorMessage": message}


def stk_accepted(tx: StkTransaction) -> Json:
    return {
        "MerchantRequestID": tx.merchant_request_id,
        "CheckoutRequestID": tx.checkout_request_id,
        "ResponseCode": "0",
        "ResponseDescription": "Success. Request accepted for processing",
        "CustomerMessage": "Success. Request accepted for processing",
    }


def stk_callback(tx: StkTransaction) -> Json:
    """The ``Body.stkCallback`` POSTed to CallBackURL once the customer answered."""
    assert tx.result_code is not None, "callback before the customer answered"
    callback: Json = {
        "MerchantRequestID": tx.merchant_request_id,
        "CheckoutRequestID": tx.checkout_request_id,
        "ResultCode": tx.result_code,
        "ResultDesc": tx.result_desc,
    }
    if tx.result_code == 0:
        assert tx.receipt is not None and tx.completed_at is not None
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": kes(tx.amount_cents)},
                {"Name": "MpesaReceiptNumber", "Value": tx.receipt},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": int(eat_stamp(tx.completed_at))},
                {"Name": "PhoneNumber", "Value": int(tx.phone)},
            ]
        }
    return {"Body": {"stkCallback": callback}}


def stk_query_result(tx: StkTransaction) -> Json:
    """The STK Query answer; ``ResultCode`` is a string here, 4999 while pending."""
    if tx.result_code is None:
        code, desc = "4999", "The transaction is still under processing"
    else:
        code, desc = str(tx.result_code), tx.query_desc
    return {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successfully",
        "MerchantRequestID": tx.merchant_request_id,
        "CheckoutRequestID": tx.checkout_request_id,
        "ResultCode": code,
        "ResultDesc": desc,
    }


def async_accepted(conversation_id: str, originator_conversation_id: str) -> Json:
    """The synchronous acknowledgement of B2C / Transaction Status / Balance."""
    return {
        "ConversationID": conversation_id,
        "OriginatorConversationID": originator_conversation_id,
        "ResponseCode": "0",
        "ResponseDescription": "Accept the service request successfully.",
    }


def _reference_data() -> Json:
    return {
        "ReferenceItem": {
            "Key": "QueueTimeoutURL",
            "Value": "https://internalsandbox.safaricom.co.ke/mpesa/b2cresults/v1/submit",
        }
    }


def b2c_result(p: B2CPayment, accounts: Accounts, customer_name: str) -> Json:
    """The B2C result for ResultURL; ``ResultParameters`` only on success."""
    assert p.result_code is not None and p.completed_at is not None
    result: Json = {
        "ResultType": 0,
        "ResultCode": p.result_code,
        "ResultDesc": p.result_desc,
        "OriginatorConversationID": p.originator_conversation_id,
        "ConversationID": p.conversation_id,
        "TransactionID": p.receipt or "",
    }
    if p.result_code == 0:
        result["ResultParameters"] = {
            "ResultParameter": [
                {"Key": "TransactionAmount", "Value": kes(p.amount_cents)},
                {"Key": "TransactionReceipt", "Value": p.receipt},
                {"Key": "ReceiverPartyPublicName", "Value": f"{p.phone} - {customer_name}"},
                {
                    "Key": "TransactionCompletedDateTime",
                    "Value": f"{p.completed_at.astimezone(NAIROBI):%d.%m.%Y %H:%M:%S}",
                },
                {"Key": "B2CUtilityAccountAvailableFunds", "Value": kes(accounts.utility_cents)},
                {"Key": "B2CWorkingAccountAvailableFunds", "Value": kes(accounts.working_cents)},
                {"Key": "B2CRecipientIsRegisteredCustomer", "Value": "Y"},
                {"Key": "B2CChargesPaidAccountAvailableFunds", "Value": kes(0)},
            ]
        }
    result["ReferenceData"] = _reference_data()
    return {"Result": result}


def queue_timeout(originator_conversation_id: str, conversation_id: str) -> Json:
    """The notice sent to QueueTimeOutURL.

    Daraja does not document this payload (protocols.md 4.8); the sandbox
    uses the ``Result`` envelope with no ``TransactionID`` and a non-zero
    code, so a client must treat it as *outcome unknown* and reconcile.
    """
    return {
        "Result": {
            "ResultType": 1,
            "ResultCode": 100000001,
            "ResultDesc": "The request timed out while waiting in the queue.",
            "OriginatorConversationID": originator_conversation_id,
            "ConversationID": conversation_id,
            "TransactionID": "",
        }
    }


def _status_of(
    found: B2CPayment | StkTransaction, b2c_shortcode: str, customer_name: str
) -> list[Json]:
    if isinstance(found, B2CPayment):
        assert found.completed_at is not None
        debit = f"{b2c_shortcode} - PenPay Sandbox"
        credit = f"{found.phone} - {customer_name}"
        originator, conversation = found.originator_conversation_id, found.conversation_id
        initiated, finalised = found.initiated_at, found.completed_at
        amount, receipt = found.amount_cents, found.receipt or ""
        status = "Completed" if found.result_code == 0 else "Failed"
        reason = "Business Payment to Customer via API"
    else:
        assert found.completed_at is not None
        debit = f"{found.phone} - {customer_name}"
        credit = f"{b2c_shortcode} - PenPay Sandbox"
        originator, conversation = found.merchant_request_id, found.checkout_request_id
        initiated = finalised = found.completed_at
        amount, receipt = found.amount_cents, found.receipt or ""
        status = "Completed"
        reason = "Customer Pay Bill Online"
    return [
        {"Key": "DebitPartyName", "Value": debit},
        {"Key": "DebitPartyName", "Value": credit},
        {"Key": "OriginatorConversationID", "Value": originator},
        {"Key": "InitiatedTime", "Value": int(eat_stamp(initiated))},
        {"Key": "DebitAccountType", "Value": "Utility Account"},
        {"Key": "DebitPartyCharges", "Value": ""},
        {"Key": "TransactionReason", "Value": ""},
        {"Key": "ReasonType", "Value": reason},
        {"Key": "TransactionStatus", "Value": status},
        {"Key": "FinalisedTime", "Value": int(eat_stamp(finalised))},
        {"Key": "Amount", "Value": str(amount // 100)},
        {"Key": "ConversationID", "Value": conversation},
        {"Key": "ReceiptNo", "Value": receipt},
    ]


def transaction_status_result(
    found: B2CPayment | StkTransaction | None,
    *,
    originator_conversation_id: str,
    conversation_id: str,
    b2c_shortcode: str,
    customer_name: str,
) -> Json:
    """The Transaction Status result for ResultURL (protocols.md 1.6)."""
    result: Json = {
        "ResultType": 0,
        "OriginatorConversationID": originator_conversation_id,
        "ConversationID": conversation_id,
        "TransactionID": "",
    }
    if found is None:
        result["ResultCode"] = 2032
        result["ResultDesc"] = "The transaction receipt number does not exist."
    else:
        result["ResultCode"] = 0
        result["ResultDesc"] = SUCCESS_DESC_STATUS
        result["TransactionID"] = found.receipt or ""
        result["ResultParameters"] = {
            "ResultParameter": _status_of(found, b2c_shortcode, customer_name)
        }
    result["ReferenceData"] = {"ReferenceItem": {"Key": "Occasion", "Value": ""}}
    return {"Result": result}


SUCCESS_DESC_STATUS = "The service request is processed successfully."


def account_balance_string(accounts: Accounts) -> str:
    """``Name|KES|available|uncleared|reserved|...`` segments joined by ``&``."""
    rows = [
        ("Working Account", accounts.working_cents),
        ("Float Account", 0),
        ("Utility Account", accounts.utility_cents),
        ("Charges Paid Account", 0),
        ("Organization Settlement Account", 0),
    ]
    return "&".join(f"{name}|KES|{kes(cents)}|{kes(cents)}|0.00|0.00" for name, cents in rows)


def account_balance_result(
    accounts: Accounts, *, originator_conversation_id: str, conversation_id: str, wall: datetime
) -> Json:
    """The Account Balance result; ``ResultCode`` is a string as in the docs."""
    return {
        "Result": {
            "ResultType": 0,
            "ResultCode": "0",
            "ResultDesc": "The service request is processed successfully.",
            "OriginatorConversationID": originator_conversation_id,
            "ConversationID": conversation_id,
            "TransactionID": "",
            "ResultParameters": {
                "ResultParameter": [
                    {"Key": "AccountBalance", "Value": account_balance_string(accounts)},
                    {"Key": "BOCompletedTime", "Value": int(eat_stamp(wall))},
                ]
            },
            "ReferenceData": _reference_data(),
        }
    }
