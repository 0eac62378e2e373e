"""PenPay's Daraja client: OAuth, STK Push/Query, B2C, Status, Balance.

Rules this client keeps, and why:

* **Money-moving calls (STK Push, B2C) are sent at most once.** A timeout or
  lost connection raises :class:`OutcomeUnknown`; resending could charge or
  pay twice. The only resend is after an "invalid token" rejection, which
  proves Daraja did not process the request.
* **Queries and token requests retry** with bounded exponential back-off.
* **One token, one minter** (see :mod:`penpay.actors.daraja.auth`).
* **A circuit breaker** refuses calls while Daraja is failing, so the HTTP
  layer can answer 503 at once instead of piling up requests.
* **Bounded concurrency** with a ``trio.CapacityLimiter``.
* Timeouts use ``trio.fail_after`` on trio's clock, so they hold for any
  transport (including ``httpx.ASGITransport``) and under ``MockClock``.
"""

from __future__ import annotations

import base64
import functools
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import msgspec
import trio

from penpay.actors.daraja import schemas
from penpay.actors.daraja.auth import TokenCache
from penpay.actors.daraja.breaker import Attempt, CircuitBreaker
from penpay.actors.daraja.config import DarajaClientConfig
from penpay.actors.daraja.errors import (
    CallNotSent,
    DarajaAuthError,
    DarajaCommunicationError,
    DarajaError,
    DarajaProtocolError,
    DarajaRejected,
    DarajaUnreachable,
    DuplicateOriginatorConversationID,
    InvalidAmount,
    InvalidRequestField,
    OutcomeUnknown,
    QueryInconclusive,
)
from penpay.actors.daraja.phone import normalize_msisdn
from penpay.errors import ConfigurationError

NAIROBI = timezone(timedelta(hours=3), "EAT")

# "Invalid Access Token" as STK, B2C/Balance and Transaction Status spell it.
TOKEN_ERROR_CODES = frozenset({"404.001.03", "401.002.01", "400.003.01"})
# Daraja says it is overloaded or broken: counts against the breaker.
_OVERLOAD_CODES = frozenset({"500.003.02", "500.003.03"})
_INTERNAL_ERROR = "500.003.1001"
_STK_QUERY_BUSY = "500.001.1001"

T = TypeVar("T")


class _Retryable(Exception):
    """A query attempt failed in a way worth trying again."""

    def __init__(self, reason: str, final: Exception | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final


class _Lost(Exception):
    """The request may have reached Daraja, but no answer came back."""


class DarajaClient:
    """Talks to Daraja (or the sandbox) through an injected ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        config: DarajaClientConfig,
        *,
        wall_clock: Callable[[], datetime],
        rng: random.Random | None = None,
    ) -> None:
        self._http = http
        self.config = config
        self._base = config.base_url.rstrip("/")
        self._wall_clock = wall_clock
        self._rng = rng if rng is not None else random.Random()
        self._limiter = trio.CapacityLimiter(config.max_concurrent_requests)
        self.breaker = CircuitBreaker(
            failure_threshold=config.breaker_failure_threshold,
            cooldown_s=config.breaker_cooldown_s,
        )
        self.tokens = TokenCache(self._mint_token, refresh_after_s=config.token_refresh_after_s)

    # ---- helpers -----------------------------------------------------------

    def nairobi_timestamp(self) -> str:
        """``YYYYMMDDHHmmss`` in Nairobi time (EAT, UTC+3), as Daraja requires."""
        now = self._wall_clock()
        if now.tzinfo is None:
            raise ConfigurationError("the Daraja client's wall clock must be timezone-aware")
        return f"{now.astimezone(NAIROBI):%Y%m%d%H%M%S}"

    def stk_password(self, timestamp: str) -> str:
        """``base64(shortcode + passkey + timestamp)``."""
        raw = f"{self.config.stk_shortcode}{self.config.stk_passkey}{timestamp}"
        return base64.b64encode(raw.encode()).decode()

    @staticmethod
    def _whole_kes(amount: object, low: int, high: int, what: str) -> int:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidAmount(
                f"{what} takes whole shillings as an int, got {type(amount).__name__} {amount!r}"
            )
        if not low <= amount <= high:
            raise InvalidAmount(f"{what} amount KES {amount} is outside KES {low}..{high}")
        return amount

    @staticmethod
    def _url(value: str, name: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequestField(f"{name} must be an absolute http(s) URL, got {value!r}")
        return value

    @staticmethod
    def _bounded(value: str, name: str, low: int, high: int) -> str:
        if not isinstance(value, str) or not low <= len(value) <= high:
            raise InvalidRequestField(f"{name} must be {low}..{high} characters, got {value!r}")
        return value

    async def _backoff(self, attempt: int) -> None:
        base = min(self.config.retry_backoff_max_s, self.config.retry_backoff_s * 2**attempt)
        await trio.sleep(base * (0.5 + 0.5 * self._rng.random()))

    # ---- one HTTP exchange ---------------------------------------------------

    async def _exchange(
        self, method: str, path: str, *, headers: dict[str, str], body: Any = None
    ) -> httpx.Response:
        """One request under the limiter and the timeout.

        Raises :class:`DarajaUnreachable` if no connection was made (nothing
        sent) and :class:`_Lost` if the request may have been received.
        """
        content = None if body is None else msgspec.json.encode(body)
        if content is not None:
            headers = {**headers, "Content-Type": "application/json"}
        async with self._limiter:
            try:
                with trio.fail_after(self.config.request_timeout_s):
                    return await self._http.request(
                        method, self._base + path, content=content, headers=headers
                    )
            except httpx.ConnectError as exc:
                raise DarajaUnreachable(f"cannot connect to Daraja: {exc}") from exc
            except trio.TooSlowError:
                raise _Lost(f"no answer within {self.config.request_timeout_s} s") from None
            except httpx.TransportError as exc:
                raise _Lost(f"{type(exc).__name__}: {exc}") from exc

    # ---- OAuth -----------------------------------------------------------------

    async def _mint_token(self) -> tuple[str, int]:
        """``GET /oauth/v1/generate``; retried (bounded) on transport/5xx failures."""
        creds = f"{self.config.consumer_key}:{self.config.consumer_secret}".encode()
        headers = {"Authorization": "Basic " + base64.b64encode(creds).decode()}

        async def once() -> tuple[str, int]:
            try:
                response = await self._exchange(
                    "GET", "/oauth/v1/generate?grant_type=client_credentials", headers=headers
                )
            except (DarajaUnreachable, _Lost) as exc:
                raise _Retryable(str(exc)) from exc
            if response.status_code == 200:
                return schemas.parse_token(response.content)
            if response.status_code >= 500:
                raise _Retryable(f"OAuth answered HTTP {response.status_code}")
            envelope = schemas.parse_error(response.content)
            if envelope is None:
                raise DarajaAuthError(
                    f"Daraja refused the consumer key/secret (HTTP {response.status_code})"
                )
            raise DarajaRejected(
                envelope.errorCode,
                envelope.errorMessage,
                http_status=response.status_code,
                request_id=envelope.requestId,
            )

        return await self._with_retries("OAuth token request", once)

    async def _with_retries(self, what: str, once: Callable[[], Awaitable[T]]) -> T:
        attempts = self.config.query_attempts_max
        for attempt in range(attempts):
            try:
                return await once()
            except _Retryable as exc:
                if attempt + 1 >= attempts:
                    if exc.final is not None:
                        raise exc.final from None
                    raise DarajaCommunicationError(
                        f"{what} failed {attempts} times; last: {exc.reason}"
                    ) from None
                await self._backoff(attempt)
        raise AssertionError("unreachable")

    # ---- authorised calls -------------------------------------------------------

    async def _call(
        self, path: str, body: dict[str, Any], *, money: tuple[str, str] | None
    ) -> bytes:
        """POST ``body`` with the Bearer token; returns the 2xx body.

        ``money`` is ``(operation, reference)`` for a money-moving call, or
        ``None`` for a query. Daraja's error
        envelopes become :class:`DarajaRejected`; a lost answer becomes
        :class:`OutcomeUnknown` for money and :class:`_Retryable` for queries;
        no token (see :meth:`_token`) becomes :class:`CallNotSent` for money.
        """
        with self.breaker.guard() as attempt:
            token = await self._token(self.tokens.get, attempt, money)
            for token_attempt in range(2):
                try:
                    response = await self._exchange(
                        "POST", path, headers={"Authorization": f"Bearer {token}"}, body=body
                    )
                except DarajaUnreachable as exc:
                    attempt.failure()
                    if money is None:
                        raise _Retryable(str(exc)) from exc
                    raise
                except _Lost as exc:
                    attempt.failure()
                    if money is None:
                        raise _Retryable(str(exc)) from exc
                    raise OutcomeUnknown(*money, str(exc)) from None
                if 200 <= response.status_code < 300:
                    attempt.success()
                    return response.content
                envelope = schemas.parse_error(response.content)
                code = envelope.errorCode if envelope else ""
                if code in TOKEN_ERROR_CODES and token_attempt == 0:
                    refresh = functools.partial(self.tokens.refresh, token)
                    token = await self._token(refresh, attempt, money)
                    continue
                if envelope is None or code == _INTERNAL_ERROR:
                    if response.status_code < 500 and envelope is None:
                        attempt.success()
                        raise DarajaProtocolError(
                            f"HTTP {response.status_code} without an error envelope from {path}"
                        )
                    attempt.failure()
                    reason = f"HTTP {response.status_code} {code or 'without envelope'}"
                    if money is None:
                        raise _Retryable(reason)
                    raise OutcomeUnknown(*money, reason)
                rejection = self._rejection(envelope, response.status_code)
                if code in _OVERLOAD_CODES:
                    attempt.failure()
                    if money is None:
                        raise _Retryable(f"{code} {envelope.errorMessage}", final=rejection)
                else:
                    attempt.success()
                raise rejection
        raise AssertionError("unreachable")

    @staticmethod
    async def _token(
        fetch: Callable[[], Awaitable[str]], attempt: Attempt, money: tuple[str, str] | None
    ) -> str:
        """A token from ``fetch`` (get or refresh), or the reason there is none.

        Called only while no money request is pending at Daraja: before the
        first send, or after Daraja rejected our token (which proves it did
        not process the request). So whatever goes wrong here (OAuth
        unreachable, refused credentials, an unreadable token) a money call
        is :class:`CallNotSent`, never :class:`OutcomeUnknown`. It is also a
        breaker failure: without a token no call can succeed, so bad
        credentials must open the breaker rather than hammer OAuth.
        """
        try:
            return await fetch()
        except DarajaError as exc:
            attempt.failure()
            if money is not None:
                raise CallNotSent(f"{money[0]} {money[1]!r} not sent: {exc}") from exc
            raise

    @staticmethod
    def _rejection(envelope: schemas.ErrorEnvelope, status: int) -> DarajaRejected:
        cls = (
            DuplicateOriginatorConversationID
            if envelope.errorCode == "500.002.1001"
            else DarajaRejected
        )
        return cls(
            envelope.errorCode,
            envelope.errorMessage,
            http_status=status,
            request_id=envelope.requestId,
        )

    async def _query(self, what: str, path: str, body: dict[str, Any]) -> bytes:
        async def once() -> bytes:
            return await self._call(path, body, money=None)

        return await self._with_retries(what, once)

    # ---- public API ---------------------------------------------------------------

    async def stk_push(
        self,
        phone: str,
        amount_kes_whole: int,
        account_reference: str,
        description: str,
        callback_url: str,
    ) -> schemas.StkPushAccepted:
        """Prompt ``phone`` to pay; sent once. The result arrives on the callback.

        Raises :class:`DarajaRejected` if refused, and :class:`OutcomeUnknown`
        if the answer was lost: the customer may still be prompted, and
        without a CheckoutRequestID only a later callback or the merchant's
        statement can tell, so never resend automatically.
        """
        cfg = self.config
        msisdn = normalize_msisdn(phone)
        amount = self._whole_kes(amount_kes_whole, cfg.stk_min_kes, cfg.stk_max_kes, "STK Push")
        self._bounded(account_reference, "AccountReference", 1, 12)
        self._bounded(description, "TransactionDesc", 0, 13)
        self._url(callback_url, "CallBackURL")
        stamp = self.nairobi_timestamp()
        body = {
            "BusinessShortCode": cfg.stk_shortcode,
            "Password": self.stk_password(stamp),
            "Timestamp": stamp,
            "TransactionType": cfg.transaction_type,
            "Amount": amount,
            "PartyA": msisdn,
            "PartyB": cfg.stk_party_b or cfg.stk_shortcode,
            "PhoneNumber": msisdn,
            "CallBackURL": callback_url,
            "AccountReference": account_reference,
            "TransactionDesc": description,
        }
        raw = await self._call(
            "/mpesa/stkpush/v1/processrequest", body, money=("STK Push", account_reference)
        )
        return schemas.parse_stk_accepted(raw)

    async def stk_query(self, checkout_request_id: str) -> schemas.StkQueryResponse:
        """The state of an STK Push; ``.pending`` while the customer has not answered.

        Retries (bounded) Daraja's ambiguous ``500.001.1001`` and transport
        failures, then raises :class:`QueryInconclusive` /
        :class:`DarajaCommunicationError`: neither means the payment failed.
        """
        self._bounded(checkout_request_id, "CheckoutRequestID", 1, 100)

        async def once() -> schemas.StkQueryResponse:
            stamp = self.nairobi_timestamp()
            body = {
                "BusinessShortCode": self.config.stk_shortcode,
                "Password": self.stk_password(stamp),
                "Timestamp": stamp,
                "CheckoutRequestID": checkout_request_id,
            }
            try:
                raw = await self._call("/mpesa/stkpushquery/v1/query", body, money=None)
            except DarajaRejected as exc:
                if exc.error_code == _STK_QUERY_BUSY:
                    inconclusive = QueryInconclusive(checkout_request_id, exc.message)
                    raise _Retryable(exc.message, final=inconclusive) from None
                raise
            return schemas.parse_stk_query(raw)

        return await self._with_retries("STK Query", once)

    async def b2c_payment(
        self,
        originator_conversation_id: str,
        phone: str,
        amount_kes_whole: int,
        remarks: str,
        result_url: str,
        timeout_url: str,
    ) -> schemas.AsyncAccepted:
        """Pay ``phone`` from the Utility account (B2C v3); sent once.

        ``originator_conversation_id`` must already be persisted by the caller:
        it is the idempotency handle Daraja dedupes on and the key to
        reconcile with :meth:`transaction_status` after :class:`OutcomeUnknown`.
        """
        cfg = self.config
        self._bounded(originator_conversation_id, "OriginatorConversationID", 1, 100)
        msisdn = normalize_msisdn(phone)
        amount = self._whole_kes(amount_kes_whole, cfg.b2c_min_kes, cfg.b2c_max_kes, "B2C")
        self._bounded(remarks, "Remarks", 2, 100)
        body = {
            "OriginatorConversationID": originator_conversation_id,
            "InitiatorName": cfg.initiator_name,
            "SecurityCredential": cfg.security_credential,
            "CommandID": cfg.b2c_command_id,
            "Amount": amount,
            "PartyA": cfg.b2c_shortcode,
            "PartyB": msisdn,
            "Remarks": remarks,
            "QueueTimeOutURL": self._url(timeout_url, "QueueTimeOutURL"),
            "ResultURL": self._url(result_url, "ResultURL"),
        }
        raw = await self._call(
            "/mpesa/b2c/v3/paymentrequest", body, money=("B2C", originator_conversation_id)
        )
        return schemas.parse_async_accepted(raw)

    async def transaction_status(
        self,
        *,
        originator_conversation_id: str | None = None,
        receipt: str | None = None,
        result_url: str,
        timeout_url: str,
    ) -> schemas.AsyncAccepted:
        """Ask for a transaction's status; the answer goes to ``result_url``."""
        if not originator_conversation_id and not receipt:
            raise InvalidRequestField("give originator_conversation_id or receipt (or both)")
        cfg = self.config
        body = {
            "Initiator": cfg.initiator_name,
            "SecurityCredential": cfg.security_credential,
            "CommandID": "TransactionStatusQuery",
            "TransactionID": receipt or "",
            "OriginalConversationID": originator_conversation_id or "",
            "PartyA": cfg.b2c_shortcode,
            "IdentifierType": cfg.identifier_type,
            "ResultURL": self._url(result_url, "ResultURL"),
            "QueueTimeOutURL": self._url(timeout_url, "QueueTimeOutURL"),
            "Remarks": "OK",
            "Occasion": "OK",
        }
        raw = await self._query("Transaction Status", "/mpesa/transactionstatus/v1/query", body)
        return schemas.parse_async_accepted(raw)

    async def account_balance(self, *, result_url: str, timeout_url: str) -> schemas.AsyncAccepted:
        """Ask for the shortcode's balances; the answer goes to ``result_url``."""
        cfg = self.config
        body = {
            "Initiator": cfg.initiator_name,
            "SecurityCredential": cfg.security_credential,
            "CommandID": "AccountBalance",
            "PartyA": cfg.b2c_shortcode,
            "IdentifierType": cfg.identifier_type,
            "Remarks": "OK",
            "ResultURL": self._url(result_url, "ResultURL"),
            "QueueTimeOutURL": self._url(timeout_url, "QueueTimeOutURL"),
        }
        raw = await self._query("Account Balance", "/mpesa/accountbalance/v1/query", body)
        return schemas.parse_async_accepted(raw)
