"""STK Push, its callback and STK Query, end to end in-process under MockClock."""

from __future__ import annotations

import base64
import re
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import trio
from trio.testing import MockClock

from penpay.actors.daraja import (
    DarajaRejected,
    InvalidAmount,
    InvalidPhoneNumber,
    InvalidRequestField,
    QueryInconclusive,
    parse_stk_callback,
)
from penpay.sandbox.daraja import Behaviour, Endpoint, FaultKind
from tests.daraja.conftest import PASSKEY, PHONE, Env

CB = "http://penpay.test/cb/stk/tok123"
PUSH = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
DECIMAL_JSON = msgspec.json.Decoder(float_hook=Decimal)


async def push(env: Env, amount: int = 10, phone: str = "0708374149") -> str:
    accepted = await env.client.stk_push(phone, amount, "INV42", "Deposit", CB)
    assert accepted.response_code == "0"
    return accepted.checkout_request_id


async def test_success_callback_shape_and_records(env: Env, autojump_clock: MockClock) -> None:
    start = trio.current_time()
    checkout = await push(env, 10)
    # ws_CO_ + ddmmyyyyHHMMSS in Nairobi time (anchor is 12:00 UTC = 15:00 EAT).
    assert re.fullmatch(r"ws_CO_18092026150000\d{10}", checkout)
    [received] = await env.receiver.wait_for(1)
    assert trio.current_time() - start == pytest.approx(20.0)
    assert received.path == "/cb/stk/tok123"
    assert received.headers["businessshortcode"] == "174379"
    assert b'{"Name":"Amount","Value":10.00}' in received.raw  # a decimal number
    callback = DECIMAL_JSON.decode(received.raw)["Body"]["stkCallback"]
    assert callback["ResultCode"] == 0 and type(callback["ResultCode"]) is int
    assert callback["CheckoutRequestID"] == checkout
    items = {i["Name"]: i.get("Value") for i in callback["CallbackMetadata"]["Item"]}
    assert items["Amount"] == Decimal("10.00")
    assert type(items["TransactionDate"]) is int and items["TransactionDate"] == 20260918150020
    assert items["PhoneNumber"] == int(PHONE)
    assert isinstance(items["MpesaReceiptNumber"], str)
    assert items["Balance"] is None  # the Balance item without a Value
    parsed = parse_stk_callback(received.raw)
    assert parsed.succeeded and parsed.amount_cents == 1000 and parsed.phone == PHONE
    [collection] = env.sandbox.world.collections
    assert (collection.receipt, collection.phone, collection.amount_cents) == (
        parsed.receipt,
        PHONE,
        1000,
    )
    assert collection.checkout_request_id == checkout
    assert env.sandbox.world.accounts.working_cents == 1000
    customer = env.sandbox.world.customer(PHONE)
    assert customer.balance_cents == env.sandbox.config.default_customer_balance_cents - 1000
    await trio.sleep(7200)
    assert len(env.receiver.received) == 1  # delivered exactly once


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [
        (Behaviour.CANCEL, 1032),
        (Behaviour.INSUFFICIENT_FUNDS, 1),
        (Behaviour.WRONG_PIN, 2001),
        (Behaviour.NO_ANSWER, 1037),
    ],
)
async def test_failed_outcomes(
    env: Env, autojump_clock: MockClock, behaviour: Behaviour, code: int
) -> None:
    env.sandbox.script_customer(PHONE, behaviour, delay_s=3)
    checkout = await push(env)
    [received] = await env.receiver.wait_for(1)
    callback = received.json["Body"]["stkCallback"]
    assert set(callback) == {"MerchantRequestID", "CheckoutRequestID", "ResultCode", "ResultDesc"}
    assert callback["ResultCode"] == code and type(callback["ResultCode"]) is int
    parsed = parse_stk_callback(received.raw)
    assert parsed.result_code == str(code) and parsed.amount_cents is None
    assert env.sandbox.world.collections == []
    query = await env.client.stk_query(checkout)
    assert query.result_code == str(code)


async def test_insufficient_wallet_balance(env: Env, autojump_clock: MockClock) -> None:
    env.sandbox.script_customer(PHONE, balance_cents=500)
    await push(env, 10)
    [received] = await env.receiver.wait_for(1)
    assert received.json["Body"]["stkCallback"]["ResultCode"] == 1
    assert env.sandbox.world.customer(PHONE).balance_cents == 500


async def test_duplicate_callback(env: Env, autojump_clock: MockClock) -> None:
    env.sandbox.script_customer(PHONE, Behaviour.DUPLICATE_CALLBACK, delay_s=1)
    await push(env)
    first, second = await env.receiver.wait_for(2)
    assert first.raw == second.raw
    assert len(env.sandbox.world.collections) == 1  # paid once, told twice


async def test_late_callback_after_query_settled(env: Env, autojump_clock: MockClock) -> None:
    env.sandbox.script_customer(PHONE, Behaviour.LATE_CALLBACK, delay_s=5)
    checkout = await push(env)
    await trio.sleep(6)
    assert (await env.client.stk_query(checkout)).result_code == "0"
    assert env.receiver.received == []
    assert len(env.sandbox.callbacks.pending) == 1
    await trio.sleep(env.sandbox.config.late_callback_delay_s)
    assert len(env.receiver.received) == 1


async def test_no_callback_then_query_settles(env: Env, autojump_clock: MockClock) -> None:
    env.sandbox.script_customer(PHONE, Behaviour.NO_CALLBACK, delay_s=15)
    checkout = await push(env)
    raw = await env.post(QUERY, _query_body(checkout))
    assert raw.status_code == 200
    assert raw.json()["ResultCode"] == "4999"  # a string on the query
    assert raw.json()["ResultDesc"] == "The transaction is still under processing"
    assert (await env.client.stk_query(checkout)).pending
    await trio.sleep(16)
    final = await env.client.stk_query(checkout)
    assert (final.result_code, final.pending) == ("0", False)
    await trio.sleep(7200)
    assert env.receiver.received == []


async def test_query_intermittent_500_is_retried(env: Env, autojump_clock: MockClock) -> None:
    checkout = await push(env)
    env.sandbox.inject_fault(Endpoint.STK_QUERY, FaultKind.BUSY, count=2)
    result = await env.client.stk_query(checkout)
    assert result.pending
    assert env.sandbox.requests_seen(Endpoint.STK_QUERY) == 3


async def test_unknown_checkout_request_id(env: Env, autojump_clock: MockClock) -> None:
    raw = await env.post(QUERY, _query_body("ws_CO_000"))
    assert raw.status_code == 500
    assert raw.json()["errorCode"] == "500.001.1001"
    assert raw.json()["errorMessage"] == "The transaction does not Exist"
    with pytest.raises(QueryInconclusive):
        await env.client.stk_query("ws_CO_000")
    assert env.sandbox.requests_seen(Endpoint.STK_QUERY) == 1 + 3


# ---- validation on the wire ----------------------------------------------------


def _password(stamp: str) -> str:
    return base64.b64encode(f"174379{PASSKEY}{stamp}".encode()).decode()


def _query_body(checkout: str, stamp: str = "20260918150000") -> dict[str, Any]:
    return {
        "BusinessShortCode": "174379",
        "Password": _password(stamp),
        "Timestamp": stamp,
        "CheckoutRequestID": checkout,
    }


def _push_body(**overrides: Any) -> dict[str, Any]:
    stamp = "20260918150000"
    body: dict[str, Any] = {
        "BusinessShortCode": 174379,
        "Password": _password(stamp),
        "Timestamp": stamp,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": "1",
        "PartyA": PHONE,
        "PartyB": "174379",
        "PhoneNumber": PHONE,
        "CallBackURL": CB,
        "AccountReference": "accountref",
        "TransactionDesc": "txndesc",
    }
    body.update(overrides)
    return body


async def test_doc_example_types_are_accepted(env: Env, autojump_clock: MockClock) -> None:
    response = await env.post(PUSH, _push_body())
    assert response.status_code == 200
    assert response.json()["ResponseCode"] == "0"
    assert (await env.post(PUSH, _push_body(Amount=5, BusinessShortCode="174379"))).is_success


@pytest.mark.parametrize(
    ("overrides", "status", "code", "message"),
    [
        ({"Timestamp": "2026-09-18 15:00"}, 400, "400.002.02", "Bad Request - Invalid Timestamp"),
        ({"Timestamp": "20261318150000"}, 400, "400.002.02", "Bad Request - Invalid Timestamp"),
        ({"Password": "d3Jvbmc="}, 500, "500.001.1001", "Wrong credentials"),
        ({"Amount": "10.5"}, 400, "400.002.02", "Bad Request - Invalid Amount"),
        ({"Amount": 0}, 400, "400.002.02", "Bad Request - Invalid Amount"),
        ({"Amount": 250001}, 400, "400.002.02", "Bad Request - Invalid Amount"),
        (
            {"AccountReference": "A" * 13},
            400,
            "400.002.02",
            "Bad Request - Invalid AccountReference",
        ),
        ({"TransactionDesc": "D" * 14}, 400, "400.002.02", "Bad Request - Invalid TransactionDesc"),
        ({"PhoneNumber": "0708374149"}, 400, "400.002.02", "Bad Request - Invalid PhoneNumber"),
        ({"PartyA": "25470837414"}, 400, "400.002.02", "Bad Request - Invalid PartyA"),
        ({"CallBackURL": "not a url"}, 400, "400.002.02", "Bad Request - Invalid CallBackURL"),
        ({"BusinessShortCode": "999999"}, 500, "500.001.1001", "Merchant does not exist"),
    ],
)
async def test_push_validation(
    env: Env,
    autojump_clock: MockClock,
    overrides: dict[str, Any],
    status: int,
    code: str,
    message: str,
) -> None:
    response = await env.post(PUSH, _push_body(**overrides))
    assert response.status_code == status
    body = response.json()
    assert (body["errorCode"], body["errorMessage"]) == (code, message)
    assert isinstance(body["requestId"], str)
    assert env.sandbox.world.stk == {}


async def test_decimal_json_amount_is_refused(env: Env, autojump_clock: MockClock) -> None:
    token = await env.token()
    raw = msgspec.json.encode(_push_body()).replace(b'"Amount":"1"', b'"Amount":10.5')
    response = await env.http.post(
        PUSH,
        content=raw,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.json()["errorMessage"] == "Bad Request - Invalid Amount"


async def test_missing_content_type(env: Env, autojump_clock: MockClock) -> None:
    token = await env.token()
    response = await env.http.post(
        PUSH,
        content=msgspec.json.encode(_push_body()),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
    )
    assert response.json()["errorMessage"] == "Bad Request - Invalid BusinessShortCode"


# ---- client-side validation: nothing is sent -------------------------------------


@pytest.mark.parametrize("amount", [Decimal("10"), 10.0, True, "10", 0, 250_001])
async def test_client_refuses_non_whole_shilling_amounts(
    env: Env, autojump_clock: MockClock, amount: Any
) -> None:
    with pytest.raises(InvalidAmount):
        await env.client.stk_push(PHONE, amount, "INV42", "Deposit", CB)
    assert env.sandbox.requests_seen(Endpoint.STK_PUSH) == 0


async def test_client_refuses_bad_fields(env: Env, autojump_clock: MockClock) -> None:
    with pytest.raises(InvalidPhoneNumber):
        await env.client.stk_push("0608374149", 10, "INV42", "Deposit", CB)
    with pytest.raises(InvalidRequestField):
        await env.client.stk_push(PHONE, 10, "A" * 13, "Deposit", CB)
    with pytest.raises(InvalidRequestField):
        await env.client.stk_push(PHONE, 10, "INV42", "D" * 14, CB)
    with pytest.raises(InvalidRequestField):
        await env.client.stk_push(PHONE, 10, "INV42", "Deposit", "ftp://x")
    assert env.sandbox.requests_seen(Endpoint.STK_PUSH) == 0


async def test_rejection_is_precise(env: Env, autojump_clock: MockClock) -> None:
    env.client.config = type(env.client.config)(
        **{**_fields(env.client.config), "stk_passkey": "wrong"}
    )
    with pytest.raises(DarajaRejected) as caught:
        await env.client.stk_push(PHONE, 10, "INV42", "Deposit", CB)
    assert (caught.value.error_code, caught.value.message) == ("500.001.1001", "Wrong credentials")
    assert env.sandbox.requests_seen(Endpoint.STK_PUSH) == 1


def _fields(config: Any) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


@pytest.mark.parametrize(
    "stamp", ["20260918120000", "20191218102115"], ids=["utc, not nairobi", "years old"]
)
async def test_a_timestamp_not_on_nairobi_time_is_refused(
    env: Env, autojump_clock: MockClock, stamp: str
) -> None:
    """protocols.md 1.3: servers in other zones get Invalid Timestamp until they set
    Africa/Nairobi. Accepting any stamp let a client that broke this pass its tests."""
    for path, body in ((PUSH, _push_body(Timestamp=stamp, Password=_password(stamp))),
                       (QUERY, _query_body("ws_CO_x", stamp))):
        response = await env.post(path, body)
        assert response.status_code == 400, response.text
        assert response.json()["errorMessage"] == "Bad Request - Invalid Timestamp"
