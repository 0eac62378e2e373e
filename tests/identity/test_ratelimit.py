"""GCRA limits: the in-memory twin on a mock clock, the Redis script, and the HTTP policy."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import coredis
import httpx
import pytest
import trio
import trio.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from penpay.engine import ActorSystem
from penpay.engine.clock import Clock
from penpay.http import create_app
from penpay.http.auth.pii import PiiCipher
from penpay.http.auth.tokens import KeySet
from penpay.http.ratelimit import (
    LOGIN_PER_IP,
    STK_PER_PHONE,
    MemoryRateLimiter,
    RateLimiter,
    RatePolicy,
    RedisRateLimiter,
    enforce,
)
from penpay.http.responses import json_response
from penpay.storage import testing as storage_testing
from tests.http.server import serving
from tests.identity.conftest import Stores, build_services
from tests.identity.helpers import login, register

POLICY = RatePolicy(name="t", limit=10, period_s=60, burst=10, fail_closed=False)


@pytest.fixture
async def redis() -> AsyncIterator[coredis.Redis[Any]]:
    client: coredis.Redis[Any] = coredis.Redis.from_url(storage_testing.test_redis_url())
    async with client:
        yield client


def redis_limiter(client: coredis.Redis[Any]) -> RedisRateLimiter:
    return RedisRateLimiter(client, namespace="test-" + secrets.token_hex(4))


async def test_memory_gcra_burst_then_steady_rate(mock_clock: trio.testing.MockClock) -> None:
    limiter = MemoryRateLimiter(Clock())
    decisions = [await limiter.acquire(POLICY, "ip1") for _ in range(11)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    assert decisions[-1].retry_after_ms == 6000  # one emission interval: 60 s / 10
    assert (await limiter.acquire(POLICY, "ip2")).allowed  # other keys are independent
    mock_clock.jump(5.999)
    assert not (await limiter.acquire(POLICY, "ip1")).allowed
    mock_clock.jump(0.001)
    assert (await limiter.acquire(POLICY, "ip1")).allowed
    mock_clock.jump(60)
    assert (await limiter.acquire(POLICY, "ip1")).remaining == 9  # fully refilled


@pytest.mark.storage
async def test_redis_script_matches_the_twin(redis: coredis.Redis[Any]) -> None:
    limiter = redis_limiter(redis)
    decisions = [await limiter.acquire(POLICY, "ip1") for _ in range(11)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    # Redis time moves while we run, so only bound the wait: at most one interval.
    assert 0 < decisions[-1].retry_after_ms <= 6000
    assert (await limiter.acquire(POLICY, "ip2")).allowed
    keys = [k async for k in redis.scan_iter(match=b"test-*")]
    assert keys and all(b"+254" not in k for k in keys)


async def _limited_app(
    system: ActorSystem, stores: Stores, keyset: KeySet, pii: PiiCipher, limiter: RateLimiter
) -> Starlette:
    services = build_services(system, stores, keyset, pii, rate_limiter=limiter)

    async def stk(request: Request) -> Response:
        assert services.auth is not None
        phone_index = services.auth.phone_index("+254712345678").hex()
        await enforce(request, STK_PER_PHONE, phone_index)
        return json_response({"sent": True})

    app = create_app(services)
    app.router.routes.append(Route("/api/v1/test/stk", stk, methods=["POST"]))
    return app


@pytest.mark.storage
@pytest.mark.integration
async def test_login_is_limited_per_ip_with_headers(
    system: ActorSystem, stores: Stores, keyset: KeySet, pii: PiiCipher,
    redis: coredis.Redis[Any],
) -> None:  # fmt: skip
    app = await _limited_app(system, stores, keyset, pii, redis_limiter(redis))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        registered = await register(client)
        assert registered.headers["x-ratelimit-limit"] == "10"  # the tightest: registrations
        attempts = [await login(client, password="wrong password!!") for _ in range(11)]
        health = await client.get("/healthz")
    assert [a.status_code for a in attempts] == [401] * 10 + [429]
    assert [a.headers["x-ratelimit-remaining"] for a in attempts[:3]] == ["9", "8", "7"]
    assert all(a.headers["x-ratelimit-limit"] == str(LOGIN_PER_IP.burst) for a in attempts[:10])
    limited = attempts[-1]
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 6
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.headers["x-content-type-options"] == "nosniff"
    assert "x-ratelimit-limit" not in health.headers  # probes are never limited


@pytest.mark.integration
async def test_per_phone_limit_and_per_ip_middleware_on_the_twin(
    system: ActorSystem, stores: Stores, keyset: KeySet, pii: PiiCipher
) -> None:
    limiter = MemoryRateLimiter(Clock())
    app = await _limited_app(system, stores, keyset, pii, limiter)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        answers = [await client.post("/api/v1/test/stk") for _ in range(3)]
        plain = await client.get("/api/v1/auth/jwks.json")
    assert plain.headers["x-ratelimit-limit"] == "120"  # PER_IP, from the middleware
    assert int(plain.headers["x-ratelimit-remaining"]) < 120
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[1].headers["x-ratelimit-limit"] == str(STK_PER_PHONE.burst)
    assert answers[1].headers["x-ratelimit-remaining"] == "0"
    assert int(answers[2].headers["retry-after"]) >= 1


@pytest.mark.integration
async def test_redis_down_capacity_fails_open_money_fails_closed(
    system: ActorSystem, stores: Stores, keyset: KeySet, pii: PiiCipher
) -> None:
    dead: coredis.Redis[Any] = coredis.Redis.from_url("unix:///nonexistent/penpay-redis.sock")
    async with dead:
        app = await _limited_app(system, stores, keyset, pii, RedisRateLimiter(dead))
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            registered = await register(client)  # per-IP and register limits: fail open
            logged_in = await login(client)
            stk = await client.post("/api/v1/test/stk")  # per-phone STK limit: fail closed
    assert registered.status_code == 201
    assert logged_in.status_code == 200
    assert "x-ratelimit-limit" not in logged_in.headers
    assert stk.status_code == 503
    assert stk.json()["code"] == "service_unavailable"
    assert stk.headers["retry-after"] == "5"


async def test_memory_limiter_switched_off_follows_the_policy(
    mock_clock: trio.testing.MockClock,
) -> None:
    from penpay.http.problems import Problem
    from penpay.http.ratelimit import check

    limiter = MemoryRateLimiter(Clock())
    limiter.available = False
    assert await check(limiter, POLICY, "x") is None
    with pytest.raises(Problem) as refused:
        await check(limiter, STK_PER_PHONE, "x")
    assert refused.value.status == 503
