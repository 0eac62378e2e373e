"""Rate limits: GCRA in Redis as one Lua script, with an in-memory twin (reliability.md §3.3).

GCRA keeps one number per key, the *theoretical arrival time* (TAT). A
request costing ``cost`` moves it forward by ``cost * T`` (``T = period /
limit``); the request is allowed if the new TAT is no more than ``burst * T``
ahead of now. So ``burst`` requests can come at once, then one every ``T``.
The script reads Redis ``TIME``, so app servers with drifting clocks agree.

Keys are ``rl:<policy>:<subject>`` where the subject is a client IP, a user
id or a phone number's **blind index** (never the number itself).

Failure policy (``RatePolicy.fail_closed``): when Redis cannot answer within
``REDIS_TIMEOUT_S``, capacity limits let the request through (and log), while
limits that protect money or one-time codes refuse it with 503: better a
short outage of those routes than STK-bombing or code guessing.

Use: :class:`RateLimitMiddleware` applies :data:`PER_IP` to every request
and writes ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining`` on every
response; a route adds its own limit with ``await enforce(request, POLICY,
subject)``, which raises 429 (``Retry-After``) or 503 and makes the headers
show the tightest limit that applied.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Protocol

import coredis
import msgspec
import trio
from coredis.exceptions import RedisError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from penpay.engine.clock import Clock
from penpay.errors import PenPayError
from penpay.http.problems import Problem

if TYPE_CHECKING:
    from penpay.http.services import Services

log = logging.getLogger("penpay.http.ratelimit")

#: How long a limit check may wait for Redis before the failure policy applies.
REDIS_TIMEOUT_S = 0.5
_STATE_KEY = "rate_limit_decision"
#: Paths never limited: probes must work while a client is being throttled.
_EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
#: Daraja's callbacks are not limited per address either: M-Pesa sends each one
#: once, from a few addresses, in bursts; a 429 would lose it before it is
#: stored. Their path token and source allow-list already gate them.
_EXEMPT_PREFIXES = ("/api/v1/callbacks/",)

GCRA_LUA = """
-- KEYS[1]=bucket; ARGV[1]=period_ms; ARGV[2]=limit; ARGV[3]=burst; ARGV[4]=cost
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local T = tonumber(ARGV[1]) / tonumber(ARGV[2])
local burst, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + cost * T
local allow_at = new_tat - burst * T
if allow_at > now then
  return {0, math.ceil(allow_at - now), 0}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
return {1, 0, math.floor((burst * T - (new_tat - now)) / T)}
"""


class RatePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """``limit`` requests per ``period_s``, up to ``burst`` at once."""

    name: str
    limit: int
    period_s: float
    burst: int
    fail_closed: bool

    def __post_init__(self) -> None:
        assert self.limit >= 1 and self.burst >= 1 and self.period_s > 0, self


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    limit: int
    remaining: int
    retry_after_ms: int

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining)}


#: Every request, per client IP: a capacity limit, so it fails open.
PER_IP = RatePolicy(name="ip", limit=600, period_s=60, burst=120, fail_closed=False)
#: Login attempts per client IP (API.md: 10/min).
LOGIN_PER_IP = RatePolicy(name="login-ip", limit=10, period_s=60, burst=10, fail_closed=False)
#: Registrations per client IP: each costs an Argon2 hash.
REGISTER_PER_IP = RatePolicy(name="register-ip", limit=10, period_s=60, burst=10, fail_closed=False)
#: Token refreshes per client IP.
REFRESH_PER_IP = RatePolicy(name="refresh-ip", limit=30, period_s=60, burst=10, fail_closed=False)
#: Writes per user.
WRITES_PER_USER = RatePolicy(name="write-user", limit=60, period_s=60, burst=10, fail_closed=False)
#: Withdrawal verification codes per user (API.md: 3/hour); protects an OTP.
WITHDRAWAL_CODES_PER_USER = RatePolicy(
    name="wd-code-user", limit=3, period_s=3600, burst=3, fail_closed=True
)
#: STK pushes per phone (blind index): 3 per 10 min, burst 2; anti STK-bombing.
STK_PER_PHONE = RatePolicy(name="stk-phone", limit=3, period_s=600, burst=2, fail_closed=True)


class RateLimiterUnavailable(PenPayError):
    """The limiter's store did not answer; the policy decides what happens."""


class RateLimiter(Protocol):
    async def acquire(self, policy: RatePolicy, subject: str, cost: int = 1) -> Decision:
        """Spend ``cost`` from ``subject``'s allowance; raises :class:`RateLimiterUnavailable`."""


def bucket_key(policy: RatePolicy, subject: str, namespace: str = "rl") -> str:
    return f"{namespace}:{policy.name}:{subject}"


class RedisRateLimiter:
    """GCRA on Redis via coredis. The client must already be open (``async with client``);
    ``namespace`` prefixes every key (one Redis shared by several deployments or tests)."""

    def __init__(
        self,
        client: coredis.Redis[Any],
        *,
        timeout_s: float = REDIS_TIMEOUT_S,
        namespace: str = "rl",
    ) -> None:
        self._client = client
        self._script = client.register_script(GCRA_LUA)
        self._timeout_s = timeout_s
        self._namespace = namespace

    async def acquire(self, policy: RatePolicy, subject: str, cost: int = 1) -> Decision:
        period_ms = int(policy.period_s * 1000)
        try:
            with trio.fail_after(self._timeout_s):
                result: Any = await self._script(
                    keys=[bucket_key(policy, subject, self._namespace)],
                    args=[period_ms, policy.limit, policy.burst, cost],
                )
        except (RedisError, OSError, trio.TooSlowError) as exc:
            raise RateLimiterUnavailable(f"{type(exc).__name__}: {exc}") from exc
        allowed, retry_after_ms, remaining = (int(v) for v in result)
        return Decision(
            allowed=bool(allowed),
            limit=policy.burst,
            remaining=max(0, remaining),
            retry_after_ms=retry_after_ms,
        )


class MemoryRateLimiter:
    """The same GCRA on :class:`~penpay.engine.clock.Clock` monotonic time (MockClock in tests).

    ``available`` can be set False to simulate the store being down.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tat_ms: dict[str, float] = {}
        self.available = True

    async def acquire(self, policy: RatePolicy, subject: str, cost: int = 1) -> Decision:
        if not self.available:
            raise RateLimiterUnavailable("memory limiter switched off")
        now = math.floor(self._clock.monotonic() * 1000)
        emission_ms = policy.period_s * 1000 / policy.limit
        key = bucket_key(policy, subject)
        tat = max(self._tat_ms.get(key, now), now)
        new_tat = tat + cost * emission_ms
        allow_at = new_tat - policy.burst * emission_ms
        if allow_at > now:
            return Decision(
                allowed=False,
                limit=policy.burst,
                remaining=0,
                retry_after_ms=math.ceil(allow_at - now),
            )
        self._tat_ms[key] = new_tat
        remaining = math.floor((policy.burst * emission_ms - (new_tat - now)) / emission_ms)
        return Decision(allowed=True, limit=policy.burst, remaining=max(0, remaining),
                        retry_after_ms=0)  # fmt: skip


async def check(limiter: RateLimiter, policy: RatePolicy, subject: str) -> Decision | None:
    """One limit check with the failure policy applied.

    Returns the decision (maybe a refusal), or None when the store is down
    and the policy fails open. Raises 503 when it is down and fails closed.
    """
    try:
        return await limiter.acquire(policy, subject)
    except RateLimiterUnavailable as exc:
        if policy.fail_closed:
            log.error("rate limiter down; refusing %s for %s: %s", policy.name, subject, exc)
            raise Problem(
                503,
                "service_unavailable",
                "This operation is briefly unavailable; try again shortly.",
                headers={"Retry-After": "5"},
            ) from exc
        log.warning("rate limiter down; allowing %s (fail open): %s", policy.name, exc)
        return None


def _refusal(decision: Decision) -> Problem:
    retry_after_s = max(1, math.ceil(decision.retry_after_ms / 1000))
    return Problem(
        429,
        "rate_limited",
        f"Too many requests; retry after {retry_after_s} s.",
        headers={"Retry-After": str(retry_after_s), **decision.headers()},
    )


def _remember(state: dict[str, Any], decision: Decision) -> None:
    """Keep the tightest decision of this request for the response headers."""
    previous: Decision | None = state.get(_STATE_KEY)
    if previous is None or decision.remaining < previous.remaining:
        state[_STATE_KEY] = decision


async def enforce(request: Request, policy: RatePolicy, subject: str) -> None:
    """Apply ``policy`` to ``subject`` inside a route: 429 or 503 as a :class:`Problem`.

    Does nothing when the app has no limiter configured.
    """
    services: Services = request.app.state.services
    limiter = services.rate_limiter
    if limiter is None:
        return
    decision = await check(limiter, policy, subject)
    if decision is None:
        return
    _remember(request.scope.setdefault("state", {}), decision)
    if not decision.allowed:
        raise _refusal(decision)


def client_ip(scope: Scope) -> str:
    """The client's address: the TCP peer, or behind a trusted proxy the one it
    forwarded (:mod:`penpay.http.proxies` has already put it in the scope)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimitMiddleware:
    """Applies :data:`PER_IP` to every HTTP request and sets the ``X-RateLimit-*`` headers."""

    def __init__(self, app: ASGIApp, policy: RatePolicy = PER_IP) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http" or scope["path"] in _EXEMPT_PATHS
            or scope["path"].startswith(_EXEMPT_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        limiter = services.rate_limiter
        if limiter is None:
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        try:
            decision = await check(limiter, self.policy, client_ip(scope))
        except Problem as problem:  # only when PER_IP is configured to fail closed
            await problem.response()(scope, receive, send)
            return
        if decision is not None:
            if not decision.allowed:
                await _refusal(decision).response()(scope, receive, send)
                return
            _remember(state, decision)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                tightest: Decision | None = state.get(_STATE_KEY)
                if tightest is not None:
                    headers = list(message.get("headers", []))
                    present = {name.lower() for name, _ in headers}
                    for name, value in tightest.headers().items():
                        if name.lower().encode() not in present:
                            headers.append((name.lower().encode(), value.encode()))
                    message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
