"""Parsing Daraja's payloads exactly, and normalising phone numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penpay.actors.daraja import (
    DarajaProtocolError,
    InvalidPhoneNumber,
    normalize_msisdn,
    parse_account_balance_result,
    parse_b2c_result,
    parse_balance_string,
    parse_stk_callback,
)
from penpay.actors.daraja.schemas import parse_error, parse_stk_query, parse_token


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0708374149", "254708374149"),
        ("0110123456", "254110123456"),
        ("254708374149", "254708374149"),
        ("254110123456", "254110123456"),
        ("+254 708 374 149", "254708374149"),
        ("+254-110-123456", "254110123456"),
    ],
)
def test_normalize_msisdn(raw: str, expected: str) -> None:
    assert normalize_msisdn(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "708374149", "0208374149", "25470837414", "2547083741490", "+255708374149", "07o8"]
)
def test_normalize_msisdn_refuses(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        normalize_msisdn(raw)


@given(st.sampled_from("17"), st.text("0123456789", min_size=8, max_size=8))
def test_every_national_form_maps_to_the_international_one(lead: str, rest: str) -> None:
    international = f"254{lead}{rest}"
    assert normalize_msisdn(f"0{lead}{rest}") == international
    assert normalize_msisdn(f"+{international}") == international


SUCCESS = b"""{"Body":{"stkCallback":{"MerchantRequestID":"29115-34620561-1",
"CheckoutRequestID":"ws_CO_191220191020363925","ResultCode":0,
"ResultDesc":"The service request is processed successfully.","CallbackMetadata":{"Item":[
{"Name":"PhoneNumber","Value":254708374149},{"Name":"Balance"},
{"Name":"MpesaReceiptNumber","Value":"NLJ7RT61SV"},{"Name":"Amount","Value":1.00},
{"Name":"TransactionDate","Value":20191219102115}]}}}}"""


def test_stk_callback_items_are_read_by_name() -> None:
    cb = parse_stk_callback(SUCCESS)
    assert cb.succeeded
    assert (cb.amount_cents, cb.receipt, cb.phone) == (100, "NLJ7RT61SV", "254708374149")
    assert cb.transaction_date == "20191219102115"
    assert cb.balance_cents is None


def test_stk_callback_refuses_sub_cent_amounts_and_missing_money() -> None:
    with pytest.raises(DarajaProtocolError):
        parse_stk_callback(SUCCESS.replace(b"1.00", b"1.005"))
    with pytest.raises(DarajaProtocolError):
        parse_stk_callback(SUCCESS.replace(b'"Amount"', b'"Other"'))
    with pytest.raises(DarajaProtocolError):
        parse_stk_callback(b'{"Body":{}}')


def test_stk_failure_callback() -> None:
    cb = parse_stk_callback(
        b'{"Body":{"stkCallback":{"MerchantRequestID":"m","CheckoutRequestID":"c",'
        b'"ResultCode":1032,"ResultDesc":"Request cancelled by user"}}}'
    )
    assert (cb.result_code, cb.succeeded, cb.amount_cents) == ("1032", False, None)


def test_b2c_result_single_parameter_and_string_code() -> None:
    r = parse_b2c_result(
        b'{"Result":{"ResultType":0,"ResultCode":"0","ResultDesc":"ok",'
        b'"OriginatorConversationID":"o","ConversationID":"AG_1","TransactionID":"SG6",'
        b'"ResultParameters":{"ResultParameter":{"Key":"TransactionAmount","Value":10}}}}'
    )
    assert r.result.result_code == "0" and r.amount_cents == 1000 and r.receipt == "SG6"


def test_b2c_doc_sample_amounts_are_exact() -> None:
    r = parse_b2c_result(
        b'{"Result":{"ResultType":0,"ResultCode":0,"ResultDesc":"ok",'
        b'"OriginatorConversationID":"o","ConversationID":"c","TransactionID":"t",'
        b'"ResultParameters":{"ResultParameter":['
        b'{"Key":"B2CUtilityAccountAvailableFunds","Value":8959269.60},'
        b'{"Key":"B2CChargesPaidAccountAvailableFunds","Value":-1980.00}]}}}'
    )
    assert r.utility_available_cents == 895926960


def test_account_balance_string_from_the_docs() -> None:
    accounts = parse_balance_string(
        "Working Account|KES|700000.00|700000.00|0.00|0.00&Float Account|KES|0.00|0.00|0.00|0.00"
        "&Utility Account|KES|228037.00|228037.00|0.00|0.00&Charges Paid Account|KES|-1540.00|"
        "-1540.00|0.00|0.00&Organization Settlement Account|KES|0.00|0.00|0.00|0.00"
    )
    assert accounts["Working Account"].available_cents == 70_000_000
    assert accounts["Utility Account"].available_cents == 22_803_700
    assert accounts["Charges Paid Account"].available_cents == -154_000
    assert len(accounts) == 5
    with pytest.raises(DarajaProtocolError):
        parse_balance_string("Working Account|KES|1.2.3|0|0|0")


def test_account_balance_failure_with_single_parameter() -> None:
    r = parse_account_balance_result(
        b'{"Result":{"ResultType":0,"ResultCode":2001,"ResultDesc":"bad",'
        b'"OriginatorConversationID":"o","ConversationID":"c","TransactionID":"t",'
        b'"ResultParameters":{"ResultParameter":{"Key":"BOCompletedTime","Value":20200625232427}}}}'
    )
    assert r.result.result_code == "2001" and r.accounts == {}
    assert r.completed_time == "20200625232427"


def test_token_query_and_error_envelope() -> None:
    assert parse_token(b'{"access_token":"abc","expires_in":"3599"}') == ("abc", 3599)
    assert parse_token(b'{"access_token":"abc","expires_in":3599}') == ("abc", 3599)
    q = parse_stk_query(
        b'{"ResponseCode":"0","ResponseDescription":"x","MerchantRequestID":"m",'
        b'"CheckoutRequestID":"c","ResultCode":"4999","ResultDesc":"busy"}'
    )
    assert q.pending and q.result_code == "4999"
    err = parse_error(b'{"requestId":"r","errorCode":"400.002.02","errorMessage":"m"}')
    assert err is not None and err.errorCode == "400.002.02"
    assert parse_error(b"") is None and parse_error(b"<html>") is None
