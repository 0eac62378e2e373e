"""Daraja payloads that are valid but vary: read them, don't throw them away."""

from __future__ import annotations

import pytest

from penpay.actors.daraja import (
    InvalidPhoneNumber,
    normalize_msisdn,
    parse_stk_callback,
    parse_transaction_status_result,
)
from penpay.actors.daraja.schemas import parse_async_accepted, parse_stk_accepted, parse_stk_query


def _paid_callback(balance_item: bytes) -> bytes:
    return (
        b'{"Body":{"stkCallback":{"MerchantRequestID":"29115-34620561-1",'
        b'"CheckoutRequestID":"ws_CO_191220191020363925","ResultCode":0,'
        b'"ResultDesc":"The service request is processed successfully.",'
        b'"CallbackMetadata":{"Item":[{"Name":"Amount","Value":1.00},'
        b'{"Name":"MpesaReceiptNumber","Value":"NLJ7RT61SV"},' + balance_item + b","
        b'{"Name":"TransactionDate","Value":20191219102115},'
        b'{"Name":"PhoneNumber","Value":254708374149}]}}}}'
    )


@pytest.mark.parametrize(
    "balance_item",
    [
        b'{"Name":"Balance","Value":"{Amount={BasicAmount=46.00, MinimumAmount=4600, '
        b'CurrencyCode=KES}}"}',  # protocols.md 1.3
        b'{"Name":"Balance","Value":{"BasicAmount":46.00}}',
        b'{"Name":"Balance","Value":"46.005"}',
    ],
)
def test_a_paid_callback_with_an_odd_balance_keeps_its_receipt(balance_item: bytes) -> None:
    cb = parse_stk_callback(_paid_callback(balance_item))
    assert (cb.succeeded, cb.receipt, cb.amount_cents) == (True, "NLJ7RT61SV", 100)
    assert cb.balance_cents is None


def test_a_plain_balance_is_still_read() -> None:
    cb = parse_stk_callback(_paid_callback(b'{"Name":"Balance","Value":"46.00"}'))
    assert cb.balance_cents == 4600


def test_stk_query_with_numeric_codes_is_read_as_strings() -> None:
    q = parse_stk_query(
        b'{"ResponseCode":0,"ResponseDescription":"accepted","MerchantRequestID":"m",'
        b'"CheckoutRequestID":"ws_CO_1","ResultCode":1032,"ResultDesc":"Cancelled by user."}'
    )
    assert (q.response_code, q.result_code, q.pending) == ("0", "1032", False)
    pending = parse_stk_query(b'{"ResponseCode":"0","ResultCode":4999,"ResultDesc":"busy"}')
    assert pending.pending and pending.result_code == "4999"


def test_acknowledgements_with_a_numeric_response_code_are_read() -> None:
    """An accepted STK Push or B2C must not become "unknown" over 0 versus "0"."""
    stk = parse_stk_accepted(
        b'{"MerchantRequestID":"m","CheckoutRequestID":"ws_CO_1","ResponseCode":0}'
    )
    assert stk.response_code == "0"
    ack = parse_async_accepted(
        b'{"ConversationID":"AG_1","OriginatorConversationID":"w-1","ResponseCode":0}'
    )
    assert (ack.response_code, ack.originator_conversation_id) == ("0", "w-1")


@pytest.mark.parametrize(
    "raw",
    [
        "2547\u0660\u0668\u0663\u0667\u0664\u0661\u0664\u0669",  # Arabic-Indic digits
        "07\uff10\uff18\uff13\uff17\uff14\uff11\uff14\uff19",  # full-width digits
        "07\u0968\u0966\u0967\u0968\u0969\u096a\u096b\u096c",  # Devanagari digits
    ],
)
def test_msisdn_refuses_non_ascii_digits(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        normalize_msisdn(raw)


def _status_result(parameters: bytes) -> bytes:
    return (
        b'{"Result":{"ResultType":0,"ResultCode":0,"ResultDesc":"ok",'
        b'"OriginatorConversationID":"query-own-id","ConversationID":"AG_Q",'
        b'"TransactionID":"SG6","ResultParameters":{"ResultParameter":' + parameters + b"}}}"
    )


def test_status_result_names_the_queried_payout_not_the_query() -> None:
    """The envelope's id is the status query's; the parameter says which payout."""
    status = parse_transaction_status_result(
        _status_result(
            b'[{"Key":"DebitPartyName","Value":"600992 - PenPay"},'
            b'{"Key":"OriginatorConversationID","Value":"w-attempt-2"},'
            b'{"Key":"TransactionStatus","Value":"Completed"},'
            b'{"Key":"Amount","Value":"300"},{"Key":"ReceiptNo","Value":"SG6"}]'
        )
    )
    assert status.originator_conversation_id == "w-attempt-2"
    assert status.result.originator_conversation_id == "query-own-id"
    single = parse_transaction_status_result(
        _status_result(b'{"Key":"OriginatorConversationID","Value":"w-attempt-1"}')
    )
    assert single.originator_conversation_id == "w-attempt-1"


def test_status_result_without_a_queried_id_says_none() -> None:
    for parameters in (b'{"Key":"OriginatorConversationID","Value":""}', b"[]"):
        status = parse_transaction_status_result(_status_result(parameters))
        assert status.originator_conversation_id is None
