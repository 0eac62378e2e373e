"""OAuth: token shape, one live token per credential set, expiry, client refresh."""

from __future__ import annotations

import trio
from trio.testing import MockClock

from penpay.actors.daraja import DarajaAuthError, DarajaClient
from penpay.sandbox.daraja import Endpoint
from tests.daraja.conftest import KEY, SECRET, Env, client_config, wall_clock

QUERY = "/mpesa/stkpushquery/v1/query"


async def test_token_shape(env: Env, autojump_clock: MockClock) -> None:
    response = await env.http.get(
        "/oauth/v1/generate?grant_type=client_credentials", auth=(KEY, SECRET)
    )
    body = response.json()
    assert response.status_code == 200
    assert len(body["access_token"]) == 28
    assert body["expires_in"] == 3599 and isinstance(body["expires_in"], int)


async def test_wrong_credentials_is_400_with_empty_body(
    env: Env, autojump_clock: MockClock
) -> None:
    response = await env.http.get(
        "/oauth/v1/generate?grant_type=client_credentials", auth=(KEY, "nope")
    )
    assert response.status_code == 400
    assert response.content == b""


async def test_bad_grant_type(env: Env, autojump_clock: MockClock) -> None:
    response = await env.http.get("/oauth/v1/generate?grant_type=password", auth=(KEY, SECRET))
    assert response.status_code == 400
    assert response.json()["errorCode"] == "400.008.02"


async def _query_with(env: Env, token: str) -> dict[str, str]:
    response = await env.post(QUERY, {"CheckoutRequestID": "x"}, token=token)
    return {"status": str(response.status_code), **response.json()}


async def test_new_mint_invalidates_previous_token(env: Env, autojump_clock: MockClock) -> None:
    first = await env.token()
    second = await env.token()
    rejected = await _query_with(env, first)
    assert rejected["status"] == "404"
    assert rejected["errorCode"] == "404.001.03"
    assert rejected["errorMessage"] == "Invalid Access Token"
    assert set(rejected) == {"status", "requestId", "errorCode", "errorMessage"}
    # The live token gets past authentication (to a validation error).
    assert (await _query_with(env, second))["errorCode"] != "404.001.03"


async def test_token_expires_after_3599_s(env: Env, autojump_clock: MockClock) -> None:
    token = await env.token()
    await trio.sleep(3598)
    assert (await _query_with(env, token))["errorCode"] != "404.001.03"
    await trio.sleep(2)
    assert (await _query_with(env, token))["errorCode"] == "404.001.03"


async def test_missing_bearer_is_invalid_authentication_header(
    env: Env, autojump_clock: MockClock
) -> None:
    response = await env.http.post(QUERY, json={})
    assert response.json()["errorCode"] == "404.001.04"


async def test_client_refreshes_once_after_invalidation(
    env: Env, autojump_clock: MockClock
) -> None:
    await env.client.account_balance(
        result_url="http://penpay.test/r", timeout_url="http://penpay.test/t"
    )
    assert env.client.tokens.mints == 1
    await env.token()  # someone else mints: the client's token dies
    await env.client.account_balance(
        result_url="http://penpay.test/r", timeout_url="http://penpay.test/t"
    )
    assert env.client.tokens.mints == 2
    assert env.sandbox.requests_seen(Endpoint.ACCOUNT_BALANCE) == 3  # 1 + rejected + retry


async def test_client_refreshes_early_and_mints_once_for_concurrent_calls(
    env: Env, autojump_clock: MockClock
) -> None:
    urls = {"result_url": "http://penpay.test/r", "timeout_url": "http://penpay.test/t"}
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(lambda: env.client.account_balance(**urls))
    assert env.client.tokens.mints == 1
    assert env.sandbox.requests_seen(Endpoint.OAUTH) == 1
    await trio.sleep(3001)  # past the 50-minute refresh point, before expiry
    await env.client.account_balance(**urls)
    assert env.client.tokens.mints == 2


async def test_client_with_wrong_secret_raises_auth_error(
    env: Env, autojump_clock: MockClock
) -> None:
    bad = DarajaClient(env.http, client_config(consumer_secret="wrong"), wall_clock=wall_clock)
    try:
        await bad.account_balance(
            result_url="http://penpay.test/r", timeout_url="http://penpay.test/t"
        )
    except DarajaAuthError:
        pass
    else:
        raise AssertionError("expected DarajaAuthError")
    assert env.sandbox.requests_seen(Endpoint.OAUTH) == 1  # not retried


async def test_stk_query_refreshes_once_on_404_001_03(env: Env, autojump_clock: MockClock) -> None:
    accepted = await env.client.stk_push(
        "0708374149", 10, "INV1", "Deposit", "http://penpay.test/c"
    )
    await env.token()  # invalidates the client's token: STK answers 404.001.03
    assert (await env.client.stk_query(accepted.checkout_request_id)).pending
    assert env.client.tokens.mints == 2
    assert env.sandbox.requests_seen(Endpoint.STK_QUERY) == 2  # rejected once, then retried
