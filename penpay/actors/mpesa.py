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
from urllib.parse import urlsplit, urlunsplit

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


#: Where Daraja's callbacks land, under PenPay's base URL. Daraja refuses a
#: CallBackURL holding "mpesa", "safaricom", "query", "exe", "cmd", "sql", ...
#: in any case, and likely any uppercase (protocols.md 1.11), so these paths
#: are short, lowercase and neutral. The older ``/callbacks/mpesa/...`` routes
#: (API.md) are still served for URLs handed out before, but never handed out.
CALLBACK_PATH = "/api/v1/callbacks"
#: The words Daraja's CallBackURL validator refuses, in any case (protocols.md 1.11).
REFUSED_WORDS = ("m-pesa", "mpesa", "safaricom", "exe", "exec", "cmd", "sql", "query")


def refused_words(url: str) -> list[str]:
    """The words of ``url`` Daraja would refuse it for (none: it may be handed out)."""
    lowered = url.lower()
    return [word for word in REFUSED_WORDS if word in lowered]


class CallbackUrls(msgspec.Struct, frozen=True):
    """Builds the callback URLs Daraja is told to call (``base`` is PenPay's public URL).

    A Transaction Status answer is told apart from a payout's own answer by
    its path (``b2c/status/...``): a failed *query* must never read as a
    failed *payout*. No query string: Daraja refuses the word "query".
    """

    base: str

    def stk(self, token: str) -> str:
        return self._url("stk", token)

    def b2c_result(self, token: str) -> str:
        return self._url("b2c/result", token)

    def b2c_timeout(self, token: str) -> str:
        return self._url("b2c/timeout", token)

    def b2c_status_result(self, token: str) -> str:
        return self._url("b2c/status/result", token)

    def b2c_status_timeout(self, token: str) -> str:
        return self._url("b2c/status/timeout", token)

    def _url(self, route: str, token: str) -> str:
        return f"{_lowercase_host(self.base)}{CALLBACK_PATH}/{route}/{token}"


def _lowercase_host(base: str) -> str:
    """``base`` with its scheme and host in lowercase, the rest as configured.

    Host names are case-insensitive, and Daraja refused a CallBackURL whose
    host had uppercase letters (protocols.md 1.11). A path prefix is left
    alone: a reverse proxy may route on its exact spelling.
    """
    parts = urlsplit(base)
    return urlunsplit(parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower()))


#: The query string that marked a Transaction Status answer on the URLs handed
#: out before status answers got paths of their own. Still honoured on the
#: ``/callbacks/mpesa/b2c/...`` routes for queries already in flight.
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
