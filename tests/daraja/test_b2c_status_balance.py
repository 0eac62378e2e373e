"""B2C v3/v1, Transaction Status and Account Balance, in-process under MockClock."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
import trio
from trio.testing import MockClock

from penpay.actors.daraja import (
    DuplicateOriginatorConversationID,
    InvalidAmount,
    parse_account_balance_result,
    parse_b2c_result,
    parse_result,
    parse_transaction_status_result,
)
from penpay.sandbox.daraja import Endpoint, FaultKind
from tests.daraja.conftest import PHONE, Env

RESULT = "http://penpay.test/cb/b2c/result"
TIMEOUT = "http://penpay.test/cb/b2c/timeout"
DECIMAL_JSON = msgspec.json.Decoder(float_hook=Decimal)


async def pay(env: Env, ocid: str = "penpay-w-1", amount: int = 300) -> str:
    accepted = await env.client.b2c_payment(ocid, PHONE, amount, "Withdrawal", RESULT, TIMEOUT)
    assert accepted.originator_conversation_id == ocid
    assert accepted.conversation_id.startswith("AG_20260918_")
    assert accepted.response_code == "0"
    return accepted.conversation_id


async def test_b2c_success(env: Env, autojump_clock: MockClock) -> None:
    before = env.sandbox.world.accounts.utility_cents
    conversation_id = await pay(env)
    [received] = await env.receiver.wait_for(1)
    assert received.path == "/cb/b2c/result"
    result = DECIMAL_JSON.decode(received.raw)["Result"]
    assert type(result["ResultCode"]) is int and result["ResultCode"] == 0
    assert isinstance(result["ResultParameters"]["ResultParameter"], list)
    parsed = parse_b2c_result(received.raw)
    assert parsed.result.succeeded
    assert parsed.amount_cents == 30000
    assert parsed.result.conversation_id == conversation_id
    assert parsed.utility_available_cents == before - 30000
    [payout] = env.sandbox.world.payouts
    assert (payout.phone, payout.amount_cents, payout.originator_conversation_id) == (
        PHONE,
        30000,
        "penpay-w-1",
    )
    assert payout.conversation_id == conversation_id and payout.receipt == parsed.receipt
    assert env.sandbox.world.accounts.utility_cents == before - 30000


async def test_b2c_insufficient_utility_funds(env: Env, autojump_clock: MockClock) -> None:
    env.sandbox.set_accounts(utility_cents=299_99)
    await pay(env)
    [received] = await env.receiver.wait_for(1)
    result = received.json["Result"]
    assert result["ResultCode"] == 1
    assert "ResultParameters" not in result
    parsed = parse_b2c_result(received.raw)
    assert parsed.result.result_code == "1" and parsed.amount_cents is None
    assert env.sandbox.world.payouts == []
    assert env.sandbox.world.accounts.utility_cents == 299_99


async def test_b2c_duplicate_originator_conversation_id(
    env: Env, autojump_clock: MockClock
) -> None:
    await pay(env, "dup-1")
    with pytest.raises(DuplicateOriginatorConversationID) as caught:
        await pay(env, "dup-1")
    assert caught.value.error_code == "500.002.1001"
    assert caught.value.message == "Duplicate OriginatorConversationID."
    assert caught.value.http_status == 500
    await trio.sleep(60)
    assert len(env.sandbox.world.payouts) == 1


async def test_b2c_queue_timeout_then_status_reconciles(
    env: Env, autojump_clock: MockClock
) -> None:
    env.sandbox.inject_fault(Endpoint.B2C, FaultKind.QUEUE_TIMEOUT)
    await pay(env, "w-timeout")
    [notice] = await env.receiver.wait_for(1)
    assert notice.path == "/cb/b2c/timeout"
    assert parse_result(notice.raw).result_code == "100000001"
    await env.client.transaction_status(
        originator_conversation_id="w-timeout",
        result_url="http://penpay.test/cb/status",
        timeout_url=TIMEOUT,
    )
    [_, status_cb] = await env.receiver.wait_for(2)
    assert status_cb.path == "/cb/status"
    status = parse_transaction_status_result(status_cb.raw)
    assert status.result.succeeded
    assert status.status == "Completed"
    assert status.amount_cents == 30000
    assert status.originator_conversation_id == "w-timeout"
    amount_param = [
        p
        for p in status_cb.json["Result"]["ResultParameters"]["ResultParameter"]
        if p["Key"] == "Amount"
    ]
    assert amount_param == [{"Key": "Amount", "Value": "300"}]  # a string, as documented


async def test_b2c_limits(env: Env, autojump_clock: MockClock) -> None:
    with pytest.raises(InvalidAmount):
        await env.client.b2c_payment("w-small", PHONE, 9, "Withdrawal", RESULT, TIMEOUT)
    assert env.sandbox.requests_seen(Endpoint.B2C) == 0
    token = await env.token()
    response = await env.post(
        "/mpesa/b2c/v1/paymentrequest",
        {
            "InitiatorName": "testapi",
            "SecurityCredential": "x",
            "CommandID": "BusinessPayment",
            "Amount": 5,
            "PartyA": "600992",
            "PartyB": PHONE,
            "Remarks": "too small",
            "QueueTimeOutURL": TIMEOUT,
            "ResultURL": RESULT,
        },
        token=token,
    )
    # v1: the sandbox makes the OriginatorConversationID up.
    assert response.json()["OriginatorConversationID"]
    [received] = await env.receiver.wait_for(1)
    assert received.json["Result"]["ResultCode"] == 2


async def test_b2c_wrong_initiator_is_2001(env: Env, autojump_clock: MockClock) -> None:
    env.client.config = type(env.client.config)(
        **{
            **{n: getattr(env.client.config, n) for n in env.client.config.__dataclass_fields__},
            "initiator_name": "someone",
        }
    )
    await pay(env)
    [received] = await env.receiver.wait_for(1)
    assert received.json["Result"]["ResultCode"] == 2001


async def test_status_by_stk_receipt_and_not_found(env: Env, autojump_clock: MockClock) -> None:
    env.sandbox.script_customer(PHONE, delay_s=1)
    await env.client.stk_push(PHONE, 50, "INV1", "Deposit", "http://penpay.test/cb/stk")
    [stk] = await env.receiver.wait_for(1)
    receipt = stk.json["Body"]["stkCallback"]["CallbackMetadata"]["Item"][1]["Value"]
    found_ack = await env.client.transaction_status(
        receipt=receipt, result_url="http://penpay.test/cb/status", timeout_url=TIMEOUT
    )
    missing_ack = await env.client.transaction_status(
        receipt="SNOTEXIST0", result_url="http://penpay.test/cb/status", timeout_url=TIMEOUT
    )
    # Both results are due at the same instant: match them by ConversationID.
    results = {r.json["Result"]["ConversationID"]: r for r in (await env.receiver.wait_for(3))[1:]}
    found_raw = results[found_ack.conversation_id]
    missing_raw = results[missing_ack.conversation_id]
    found = parse_transaction_status_result(found_raw.raw)
    assert (found.status, found.amount_cents, found.receipt) == ("Completed", 5000, receipt)
    missing = parse_transaction_status_result(missing_raw.raw)
    assert missing.result.result_code != "0" and missing.status is None


async def test_account_balance(env: Env, autojump_clock: MockClock) -> None:
    env.sandbox.set_accounts(working_cents=700_000_00, utility_cents=228_037_50)
    accepted = await env.client.account_balance(
        result_url="http://penpay.test/cb/balance", timeout_url=TIMEOUT
    )
    [received] = await env.receiver.wait_for(1)
    assert received.json["Result"]["ResultCode"] == "0"  # a string in balance results
    parsed = parse_account_balance_result(received.raw)
    assert parsed.result.conversation_id == accepted.conversation_id
    assert parsed.accounts["Working Account"].available_cents == 700_000_00
    assert parsed.accounts["Utility Account"].available_cents == 228_037_50
    assert parsed.accounts["Utility Account"].currency == "KES"
    assert parsed.completed_time is not None and len(parsed.completed_time) == 14
