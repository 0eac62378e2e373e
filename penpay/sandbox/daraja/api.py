"""The Daraja HTTP endpoints, as PenPay sees them on the wire.

Each handler: count the request, check the Bearer token (with the error code
*that* API uses, protocols.md 1.9), apply an injected fault, validate, then
hand the work to :class:`~penpay.sandbox.daraja.sandbox.DarajaSandbox`.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import Response

from penpay.sandbox.daraja import validation as v
from penpay.sandbox.daraja import wire
from penpay.sandbox.daraja.state import (
    B2CPayment,
    Endpoint,
    FaultKind,
    StkTransaction,
    TokenVerdict,
)

if TYPE_CHECKING:
    from penpay.sandbox.daraja.sandbox import DarajaSandbox

# The "invalid token" error each API answers with (protocols.md 1.9).
_TOKEN_ERRORS: dict[Endpoint, tuple[int, str]] = {
    Endpoint.STK_PUSH: (404, "404.001.03"),
    Endpoint.STK_QUERY: (404, "404.001.03"),
    Endpoint.B2C: (401, "401.002.01"),
    Endpoint.ACCOUNT_BALANCE: (401, "401.002.01"),
    Endpoint.TRANSACTION_STATUS: (400, "400.003.01"),
}


def json_response(body: Any, status: int = 200) -> Response:
    return Response(wire.ENCODER.encode(body), status_code=status, media_type="application/json")


def reject(sb: DarajaSandbox, rejection: v.Rejection) -> Response:
    request_id = sb.world.new_id("request", sb.wall_clock())
    return json_response(
        wire.error(request_id, rejection.code, rejection.message), rejection.status
    )


def _authorize(sb: DarajaSandbox, request: Request, endpoint: Endpoint) -> None:
    verdict = sb.world.check_token(request.headers.get("authorization"), trio.current_time())
    if verdict is TokenVerdict.MISSING:
        raise v.Rejection(404, "404.001.04", "Invalid Authentication Header")
    if verdict is TokenVerdict.INVALID:
        status, code = _TOKEN_ERRORS[endpoint]
        raise v.Rejection(status, code, "Invalid Access Token")


async def _pre_fault(sb: DarajaSandbox, fault: FaultKind | None) -> None:
    """Faults that stop the request before anything happens."""
    if fault is FaultKind.HTTP_500:
        raise v.Rejection(500, "500.003.1001", "Internal Server Error")
    if fault is FaultKind.BUSY:
        raise v.Rejection(500, "500.001.1001", "")
    if fault is FaultKind.TIMEOUT:
        await trio.sleep(sb.config.hang_s)
        raise v.Rejection(504, "500.003.1001", "Internal Server Error")


async def _post_fault(sb: DarajaSandbox, fault: FaultKind | None) -> None:
    """A fault after the work was accepted: the answer is lost."""
    if fault is FaultKind.TIMEOUT_AFTER_ACCEPT:
        await trio.sleep(sb.config.hang_s)


async def _guard(sb: DarajaSandbox, request: Request, endpoint: Endpoint) -> FaultKind | None:
    sb.world.count(endpoint)
    _authorize(sb, request, endpoint)
    fault = sb.world.take_fault(endpoint)
    await _pre_fault(sb, fault)
    return fault


async def oauth(sb: DarajaSandbox, request: Request) -> Response:
    """``GET /oauth/v1/generate?grant_type=client_credentials`` with Basic auth."""
    sb.world.count(Endpoint.OAUTH)
    try:
        fault = sb.world.take_fault(Endpoint.OAUTH)
        await _pre_fault(sb, fault)
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            raise v.Rejection(400, "400.008.01", "Invalid authentication type passed")
        if request.query_params.get("grant_type") != "client_credentials":
            raise v.Rejection(400, "400.008.02", "Invalid grant type passed")
        try:
            decoded = base64.b64decode(header.removeprefix("Basic ").strip(), validate=True)
            key, _, secret = decoded.decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            key, secret = "", ""
        cred = sb.config.credential_for(key, secret)
        if cred is None:
            return Response(b"", status_code=400)  # what Daraja does for bad credentials
        token, ttl = sb.world.mint_token(cred.consumer_key, trio.current_time())
        await _post_fault(sb, fault)
        return json_response({"access_token": token, "expires_in": ttl})
    except v.Rejection as rejection:
        return reject(sb, rejection)


async def stk_push(sb: DarajaSandbox, request: Request) -> Response:
    """``POST /mpesa/stkpush/v1/processrequest``."""
    try:
        fault = await _guard(sb, request, Endpoint.STK_PUSH)
        body = v.decode_json(
            request.headers.get("content-type"), await request.body(), "BusinessShortCode"
        )
        cfg = sb.config
        if v.text(body, "BusinessShortCode") != cfg.stk_shortcode:
            raise v.Rejection(500, "500.001.1001", "Merchant does not exist")
        stamp = v.timestamp(body, sb.wall_clock(), cfg.timestamp_tolerance_s)
        v.check_password(body, cfg.stk_shortcode, cfg.stk_passkey, stamp)
        if v.optional_text(body, "TransactionType") not in (
            "CustomerPayBillOnline",
            "CustomerBuyGoodsOnline",
        ):
            raise v.bad("TransactionType")
        amount_kes = v.whole_kes(body)
        if not cfg.stk_min_kes <= amount_kes <= cfg.stk_max_kes:
            raise v.bad("Amount")
        v.msisdn(body, "PartyA")
        phone = v.msisdn(body, "PhoneNumber")
        v.text(body, "PartyB")
        callback_url = v.url(body, "CallBackURL")
        reference = v.max_length(body, "AccountReference", 12, required=True)
        v.max_length(body, "TransactionDesc", 13, required=False)
    except v.Rejection as rejection:
        return reject(sb, rejection)
    wall = sb.wall_clock()
    customer = sb.world.customer(phone)
    tx = StkTransaction(
        merchant_request_id=sb.world.new_id("merchant", wall),
        checkout_request_id=sb.world.new_id("checkout", wall),
        phone=phone,
        amount_cents=amount_kes * 100,
        account_reference=reference,
        callback_url=callback_url,
        behaviour=customer.behaviour,
        delay_s=customer.delay_s,
        suppress_callback=fault is FaultKind.NO_CALLBACK,
    )
    sb.submit_stk(tx)
    await _post_fault(sb, fault)
    return json_response(wire.stk_accepted(tx))


async def stk_query(sb: DarajaSandbox, request: Request) -> Response:
    """``POST /mpesa/stkpushquery/v1/query``."""
    try:
        await _guard(sb, request, Endpoint.STK_QUERY)
        body = v.decode_json(
            request.headers.get("content-type"), await request.body(), "BusinessShortCode"
        )
        cfg = sb.config
        if v.text(body, "BusinessShortCode") != cfg.stk_shortcode:
            raise v.Rejection(500, "500.001.1001", "Merchant does not exist")
        stamp = v.timestamp(body, sb.wall_clock(), cfg.timestamp_tolerance_s)
        v.check_password(body, cfg.stk_shortcode, cfg.stk_passkey, stamp)
        checkout_id = v.text(body, "CheckoutRequestID")
        tx = sb.world.stk.get(checkout_id)
        if tx is None:
            raise v.Rejection(500, "500.001.1001", "The transaction does not Exist")
    except v.Rejection as rejection:
        return reject(sb, rejection)
    return json_response(wire.stk_query_result(tx))


def _initiator_fields(body: dict[str, Any]) -> tuple[str, str]:
    initiator = v.text(body, "InitiatorName" if "InitiatorName" in body else "Initiator")
    credential = v.text(body, "SecurityCredential")
    return initiator, credential


async def b2c(sb: DarajaSandbox, request: Request, *, version: int) -> Response:
    """``POST /mpesa/b2c/v3/paymentrequest`` (and the older v1)."""
    try:
        fault = await _guard(sb, request, Endpoint.B2C)
        body = v.decode_json(
            request.headers.get("content-type"), await request.body(), "InitiatorName"
        )
        wall = sb.wall_clock()
        if version == 3:
            originator = v.text(body, "OriginatorConversationID")
        else:
            originator = sb.world.new_id("originator", wall)
        initiator, credential = _initiator_fields(body)
        if v.optional_text(body, "CommandID") not in (
            "BusinessPayment",
            "SalaryPayment",
            "PromotionPayment",
        ):
            raise v.bad("CommandID")
        amount_kes = v.whole_kes(body)
        if v.text(body, "PartyA") != sb.config.b2c_shortcode:
            raise v.bad("PartyA")
        phone = v.msisdn(body, "PartyB")
        v.max_length(body, "Remarks", 100, required=True)
        result_url = v.url(body, "ResultURL")
        timeout_url = v.url(body, "QueueTimeOutURL")
        if originator in sb.world.b2c:
            raise v.Rejection(500, "500.002.1001", "Duplicate OriginatorConversationID.")
    except v.Rejection as rejection:
        return reject(sb, rejection)
    payment = B2CPayment(
        originator_conversation_id=originator,
        conversation_id=sb.world.new_id("conversation", wall),
        phone=phone,
        amount_cents=amount_kes * 100,
        initiator_name=initiator,
        security_credential=credential,
        result_url=result_url,
        timeout_url=timeout_url,
        initiated_at=wall,
    )
    sb.submit_b2c(payment, fault)
    await _post_fault(sb, fault)
    return json_response(wire.async_accepted(payment.conversation_id, originator))


async def transaction_status(sb: DarajaSandbox, request: Request) -> Response:
    """``POST /mpesa/transactionstatus/v1/query``: acknowledged now, answered later."""
    try:
        fault = await _guard(sb, request, Endpoint.TRANSACTION_STATUS)
        body = v.decode_json(request.headers.get("content-type"), await request.body(), "Initiator")
        _initiator_fields(body)
        if v.optional_text(body, "CommandID") != "TransactionStatusQuery":
            raise v.bad("CommandID")
        receipt = v.optional_text(body, "TransactionID") or None
        originator = (
            v.optional_text(body, "OriginalConversationID")
            or v.optional_text(body, "OriginatorConversationID")
            or None
        )
        if receipt is None and originator is None:
            raise v.Rejection(400, "400.002.05", "Invalid Request Payload")
        v.text(body, "PartyA")
        result_url = v.url(body, "ResultURL")
        timeout_url = v.url(body, "QueueTimeOutURL")
    except v.Rejection as rejection:
        return reject(sb, rejection)
    wall = sb.wall_clock()
    ack_originator = sb.world.new_id("originator", wall)
    conversation_id = sb.world.new_id("conversation", wall)
    sb.submit_status(
        originator_conversation_id=originator,
        receipt=receipt,
        ack_originator=ack_originator,
        conversation_id=conversation_id,
        result_url=result_url,
        timeout_url=timeout_url,
        fault=fault,
    )
    await _post_fault(sb, fault)
    return json_response(wire.async_accepted(conversation_id, ack_originator))


async def account_balance(sb: DarajaSandbox, request: Request) -> Response:
    """``POST /mpesa/accountbalance/v1/query``: acknowledged now, answered later."""
    try:
        fault = await _guard(sb, request, Endpoint.ACCOUNT_BALANCE)
        body = v.decode_json(request.headers.get("content-type"), await request.body(), "Initiator")
        _initiator_fields(body)
        if v.optional_text(body, "CommandID") != "AccountBalance":
            raise v.bad("CommandID")
        if v.text(body, "PartyA") != sb.config.b2c_shortcode:
            raise v.bad("PartyA")
        result_url = v.url(body, "ResultURL")
        timeout_url = v.url(body, "QueueTimeOutURL")
    except v.Rejection as rejection:
        return reject(sb, rejection)
    wall = sb.wall_clock()
    ack_originator = sb.world.new_id("originator", wall)
    conversation_id = sb.world.new_id("conversation", wall)
    sb.submit_balance(
        ack_originator=ack_originator,
        conversation_id=conversation_id,
        result_url=result_url,
        timeout_url=timeout_url,
        fault=fault,
    )
    await _post_fault(sb, fault)
    return json_response(wire.async_accepted(conversation_id, ack_originator))
