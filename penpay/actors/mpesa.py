"""The M-Pesa gateway actor: the one place PenPay calls Daraja from.

Each request runs as a task of this actor, so a slow Daraja call never holds
up the mailbox (the client bounds concurrency and owns the circuit
breaker). Every outcome, including every failure, becomes an input for the
transaction that asked, which decides what it means. This actor never
crashes on a Daraja error and never retries a money-moving call: that
would be the transaction's decision, and it makes it by querying.
"""

from __future__ import annotations

import logging

import msgspec

from penpay.actors import daraja
from penpay.actors.gateway import GatewayActor
from penpay.actors.saga import (
    B2CAccepted,
    B2CRejected,
    B2CResult,
    B2CUnknown,
    Command,
    Input,
    PayB2C,
    QueryB2C,
    QueryStk,
    StartStkPush,
    StkPushAccepted,
    StkPushRejected,
    StkPushUnknown,
    StkQueryResult,
)

log = logging.getLogger("penpay.mpesa")


class CallbackUrls(msgspec.Struct, frozen=True):
    """Builds the callback URLs Daraja is told to call (``base`` is PenPay's public URL)."""

    base: str

    def stk(self, token: str) -> str:
        return f"{self.base}/api/v1/callbacks/mpesa/stk/{token}"

    def b2c_result(self, token: str) -> str:
        return f"{self.base}/api/v1/callbacks/mpesa/b2c/result/{token}"

    def b2c_timeout(self, token: str) -> str:
        return f"{self.base}/api/v1/callbacks/mpesa/b2c/timeout/{token}"

    # A Transaction Status answer comes to the same routes, marked by the URL
    # PenPay gave: a failed *query* must never read as a failed *payout*.

    def b2c_status_result(self, token: str) -> str:
        return f"{self.b2c_result(token)}?{STATUS_QUERY_MARK}"

    def b2c_status_timeout(self, token: str) -> str:
        return f"{self.b2c_timeout(token)}?{STATUS_QUERY_MARK}"


#: The query string on the callback URLs of a Transaction Status request.
STATUS_QUERY_MARK = "query=status"


STK_DESCRIPTION = "PenPay"


class MpesaGateway(GatewayActor):
    kind = "mpesa-gateway"

    def __init__(self, client: daraja.DarajaClient, urls: CallbackUrls) -> None:
        self.client = client
        self.urls = urls

    async def call(self, command: Command, user_id: str = "") -> Input | None:
        """Carry out ``command`` and describe its outcome as a transaction input."""
        match command:
            case StartStkPush():
                return await self._stk_push(command)
            case QueryStk(checkout_request_id):
                return await self._stk_query(checkout_request_id)
            case PayB2C():
                return await self._b2c(command)
            case QueryB2C(originator, token):
                return await self._b2c_status(originator, token)
        raise TypeError(f"not an M-Pesa command: {command!r}")

    async def _stk_push(self, command: StartStkPush) -> Input:
        try:
            accepted = await self.client.stk_push(
                phone=command.phone,
                amount_kes_whole=command.amount_kes,
                account_reference=command.account_reference,
                description=STK_DESCRIPTION,
                callback_url=self.urls.stk(command.callback_token),
            )
        except daraja.DarajaRejected as exc:
            return StkPushRejected(exc.error_code, exc.message)
        except (daraja.DarajaUnreachable, daraja.DarajaUnavailable, daraja.CallNotSent) as exc:
            return StkPushRejected("unavailable", str(exc))  # nothing reached Daraja
        except (daraja.InvalidAmount, daraja.InvalidPhoneNumber, daraja.InvalidRequestField) as exc:
            return StkPushRejected("invalid_request", str(exc))
        except daraja.DarajaError as exc:
            return StkPushUnknown(str(exc))
        return StkPushAccepted(accepted.merchant_request_id, accepted.checkout_request_id)

    async def _stk_query(self, checkout_request_id: str) -> Input:
        try:
            response = await self.client.stk_query(checkout_request_id)
        except daraja.DarajaError as exc:
            log.info("STK query for %s inconclusive: %s", checkout_request_id, exc)
            return StkQueryResult(checkout_request_id, None)
        if response.pending or not response.result_code:
            return StkQueryResult(checkout_request_id, None, response.result_desc)
        return StkQueryResult(checkout_request_id, response.result_code, response.result_desc)

    async def _b2c(self, command: PayB2C) -> Input:
        originator = command.originator_conversation_id
        try:
            accepted = await self.client.b2c_payment(
                originator_conversation_id=originator,
                phone=command.phone,
                amount_kes_whole=command.amount_kes,
                remarks=command.remarks,
                result_url=self.urls.b2c_result(command.callback_token),
                timeout_url=self.urls.b2c_timeout(command.callback_token),
            )
        except daraja.DarajaRejected as exc:
            return B2CRejected(originator, exc.error_code, exc.message)
        except daraja.DarajaError as exc:
            # Unreachable, breaker open, timeout: whether it reached M-Pesa is the
            # status query's to say; resending later uses the same originator id.
            return B2CUnknown(originator, str(exc))
        return B2CAccepted(originator, accepted.conversation_id)

    async def _b2c_status(self, originator: str, token: str) -> Input | None:
        try:
            await self.client.transaction_status(
                originator_conversation_id=originator,
                result_url=self.urls.b2c_status_result(token),
                timeout_url=self.urls.b2c_status_timeout(token),
            )
        except daraja.DarajaError as exc:
            log.info("transaction status for %s not sent: %s", originator, exc)
            return B2CResult(originator, None, str(exc), from_status_query=True)
        return None  # the answer arrives as a callback

    def unknown(self, command: Command, reason: str) -> Input | None:
        match command:
            case StartStkPush():
                return StkPushUnknown(reason)
            case QueryStk(checkout_request_id):
                return StkQueryResult(checkout_request_id, None)
            case PayB2C(originator_conversation_id=originator):
                return B2CUnknown(originator, reason)
            case QueryB2C(originator_conversation_id=originator):
                return B2CResult(originator, None, reason, from_status_query=True)
        return None
