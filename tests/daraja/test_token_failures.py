"""No OAuth token means a money call was certainly not processed, and counts
against the breaker.

A scripted ``httpx.MockTransport`` stands in for Daraja, so each OAuth
failure (refused credentials, an unreadable token, a refresh that fails after
"Invalid Access Token") can be produced exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from trio.testing import MockClock

from penpay.actors.daraja import (
    BreakerState,
    CallNotSent,
    DarajaAuthError,
    DarajaClient,
    DarajaUnavailable,
)
from penpay.actors.mpesa import CallbackUrls, MpesaGateway
from penpay.actors.saga import StartStkPush, StkPushRejected
from tests.daraja.conftest import PHONE, client_config, wall_clock

BASE = "http://daraja.test"
CB = "http://penpay.test/cb/stk/x"
RESULT = "http://penpay.test/cb/b2c/result"
TIMEOUT = "http://penpay.test/cb/b2c/timeout"
TOKEN = {"access_token": "T1", "expires_in": 3599}
Handler = Callable[[httpx.Request], httpx.Response]


def scripted(handler: Handler, **overrides: Any) -> tuple[DarajaClient, list[str]]:
    """A client whose Daraja is ``handler``; returns it and the paths it was asked."""
    paths: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record), base_url=BASE)
    config = client_config(BASE, retry_backoff_s=0.01, **overrides)
    return DarajaClient(http, config, wall_clock=wall_clock, rng=random.Random(1)), paths


def oauth_only(answer: httpx.Response) -> Handler:
    """OAuth always gives ``answer``; any other endpoint must never be reached."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path.startswith("/oauth"), f"{request.url.path} was called"
        return answer

    return handler


def token_rejected_then_oauth_down(error_code: str) -> Handler:
    """The first token is rejected by every API; every later mint fails (HTTP 503)."""
    mints: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/oauth"):
            mints.append(1)
            if len(mints) == 1:
                return httpx.Response(200, json=TOKEN)
            return httpx.Response(503)
        body = {"requestId": "r", "errorCode": error_code, "errorMessage": "Invalid Access Token"}
        return httpx.Response(404, json=body)

    return handler


REFUSED = httpx.Response(400, content=b"")  # wrong consumer key/secret
UNREADABLE_TOKENS = [
    httpx.Response(200, json={"access_token": "", "expires_in": 3599}),
    httpx.Response(200, json={"access_token": "T1", "expires_in": "soon"}),
    httpx.Response(200, content=b"<html>maintenance</html>"),
]


async def test_refused_credentials_make_money_calls_not_sent(autojump_clock: MockClock) -> None:
    client, paths = scripted(oauth_only(REFUSED))
    with pytest.raises(CallNotSent, match="INV1") as caught:
        await client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    assert isinstance(caught.value.__cause__, DarajaAuthError)
    with pytest.raises(CallNotSent, match="w-1"):
        await client.b2c_payment("w-1", PHONE, 100, "Withdrawal", RESULT, TIMEOUT)
    assert all(path.startswith("/oauth") for path in paths)


@pytest.mark.parametrize("answer", UNREADABLE_TOKENS)
async def test_an_unreadable_token_makes_a_money_call_not_sent(
    answer: httpx.Response, autojump_clock: MockClock
) -> None:
    client, _ = scripted(oauth_only(answer))
    with pytest.raises(CallNotSent, match="INV1"):
        await client.stk_push(PHONE, 10, "INV1", "Deposit", CB)


async def test_stk_push_whose_token_was_rejected_and_refresh_failed_is_not_sent(
    autojump_clock: MockClock,
) -> None:
    """404.001.03 proves the push was not processed; a failed refresh keeps it so."""
    client, paths = scripted(token_rejected_then_oauth_down("404.001.03"))
    with pytest.raises(CallNotSent, match="INV1"):
        await client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    assert paths.count("/mpesa/stkpush/v1/processrequest") == 1  # never resent


async def test_b2c_whose_token_was_rejected_and_refresh_failed_is_not_sent(
    autojump_clock: MockClock,
) -> None:
    client, paths = scripted(token_rejected_then_oauth_down("401.002.01"))
    with pytest.raises(CallNotSent, match="w-1"):
        await client.b2c_payment("w-1", PHONE, 100, "Withdrawal", RESULT, TIMEOUT)
    assert paths.count("/mpesa/b2c/v3/paymentrequest") == 1


async def test_bad_credentials_open_the_breaker(autojump_clock: MockClock) -> None:
    client, paths = scripted(oauth_only(REFUSED), breaker_failure_threshold=3)
    for _ in range(2):
        with pytest.raises(CallNotSent):
            await client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    with pytest.raises(DarajaAuthError):  # a query keeps the precise error
        await client.account_balance(result_url=RESULT, timeout_url=TIMEOUT)
    assert client.breaker.state is BreakerState.OPEN
    asked = len(paths)
    with pytest.raises(DarajaUnavailable):
        await client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    assert len(paths) == asked  # refused without bothering OAuth


async def test_a_failed_refresh_counts_against_the_breaker(autojump_clock: MockClock) -> None:
    client, _ = scripted(token_rejected_then_oauth_down("404.001.03"), breaker_failure_threshold=1)
    with pytest.raises(CallNotSent):
        await client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    assert client.breaker.state is BreakerState.OPEN


async def test_gateway_reports_refused_credentials_as_a_clean_rejection(
    autojump_clock: MockClock,
) -> None:
    """Not StkPushUnknown: that would park the deposit in review, float hold and all."""
    client, _ = scripted(oauth_only(REFUSED))
    gateway = MpesaGateway(client, CallbackUrls("http://penpay.test"))
    out = await gateway.call(StartStkPush(PHONE, 100, "PPABCDEF1234", "tok"))
    assert isinstance(out, StkPushRejected) and out.error_code == "unavailable", out
