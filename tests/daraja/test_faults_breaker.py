"""Fault injection, no-retry of money calls, query retries, the circuit breaker."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio.testing import MockClock

from penpay.actors.daraja import (
    BreakerState,
    CallNotSent,
    CircuitBreaker,
    DarajaCommunicationError,
    DarajaUnavailable,
    OutcomeUnknown,
)
from penpay.sandbox.daraja import Endpoint, FaultKind
from tests.daraja.conftest import PHONE, Env

CB = "http://penpay.test/cb/stk/x"
RESULT = "http://penpay.test/cb/b2c/result"
TIMEOUT = "http://penpay.test/cb/b2c/timeout"
STATUS = {"result_url": "http://penpay.test/cb/status", "timeout_url": TIMEOUT}


async def test_http_500_on_stk_push_is_outcome_unknown_and_not_retried(
    env: Env, autojump_clock: MockClock
) -> None:
    env.sandbox.inject_fault(Endpoint.STK_PUSH, FaultKind.HTTP_500)
    with pytest.raises(OutcomeUnknown) as caught:
        await env.client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    assert caught.value.operation == "STK Push" and caught.value.reference == "INV1"
    assert env.sandbox.requests_seen(Endpoint.STK_PUSH) == 1


async def test_a_money_call_without_an_oauth_token_is_certainly_not_sent(
    env: Env, autojump_clock: MockClock
) -> None:
    """Not an unknown outcome: a deposit can fail cleanly instead of going to review."""
    env.sandbox.inject_fault(Endpoint.OAUTH, FaultKind.HTTP_500, probability=1.0)
    with pytest.raises(CallNotSent, match="INV1"):
        await env.client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    with pytest.raises(CallNotSent):
        await env.client.b2c_payment("w-0", PHONE, 100, "Withdrawal", RESULT, TIMEOUT)
    assert env.sandbox.requests_seen(Endpoint.STK_PUSH) == 0
    assert env.sandbox.requests_seen(Endpoint.B2C) == 0


async def test_timeout_on_b2c_is_outcome_unknown_and_not_retried(
    env: Env, autojump_clock: MockClock
) -> None:
    env.sandbox.inject_fault(Endpoint.B2C, FaultKind.TIMEOUT)
    start = trio.current_time()
    with pytest.raises(OutcomeUnknown) as caught:
        await env.client.b2c_payment("w-1", PHONE, 100, "Withdrawal", RESULT, TIMEOUT)
    assert trio.current_time() - start == pytest.approx(env.client.config.request_timeout_s)
    assert caught.value.reference == "w-1"
    assert env.sandbox.requests_seen(Endpoint.B2C) == 1
    await trio.sleep(60)
    assert env.sandbox.world.payouts == []  # a plain timeout processed nothing


async def test_timeout_after_accept_paid_out_and_status_finds_it(
    env: Env, autojump_clock: MockClock
) -> None:
    env.sandbox.inject_fault(Endpoint.B2C, FaultKind.TIMEOUT_AFTER_ACCEPT)
    with pytest.raises(OutcomeUnknown):
        await env.client.b2c_payment("w-2", PHONE, 100, "Withdrawal", RESULT, TIMEOUT)
    assert env.sandbox.requests_seen(Endpoint.B2C) == 1
    await env.receiver.wait_for(1)
    assert len(env.sandbox.world.payouts) == 1  # the money moved anyway


async def test_queries_are_retried(env: Env, autojump_clock: MockClock) -> None:
    env.sandbox.inject_fault(Endpoint.TRANSACTION_STATUS, FaultKind.HTTP_500, count=2)
    await env.client.transaction_status(originator_conversation_id="w-x", **STATUS)
    assert env.sandbox.requests_seen(Endpoint.TRANSACTION_STATUS) == 3
    env.sandbox.inject_fault(Endpoint.ACCOUNT_BALANCE, FaultKind.TIMEOUT, count=5)
    with pytest.raises(DarajaCommunicationError):
        await env.client.account_balance(**STATUS)
    assert env.sandbox.requests_seen(Endpoint.ACCOUNT_BALANCE) == 3  # bounded


async def test_no_callback_fault_then_query_settles(env: Env, autojump_clock: MockClock) -> None:
    env.sandbox.inject_fault(Endpoint.STK_PUSH, FaultKind.NO_CALLBACK)
    accepted = await env.client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    await trio.sleep(3600)
    assert env.receiver.received == []
    assert (await env.client.stk_query(accepted.checkout_request_id)).result_code == "0"


async def test_probability_fault_uses_the_seeded_rng(env: Env, autojump_clock: MockClock) -> None:
    env.sandbox.inject_fault(Endpoint.OAUTH, FaultKind.HTTP_500, probability=1.0)
    with pytest.raises(DarajaCommunicationError):
        await env.client.account_balance(**STATUS)
    assert env.sandbox.requests_seen(Endpoint.OAUTH) == 3
    env.sandbox.clear_faults()
    await env.client.account_balance(**STATUS)


@pytest.fixture
def client_overrides() -> dict[str, Any]:
    return {"breaker_failure_threshold": 3, "breaker_cooldown_s": 30.0}


async def test_breaker_opens_half_opens_and_closes(env: Env, autojump_clock: MockClock) -> None:
    env.sandbox.inject_fault(Endpoint.STK_PUSH, FaultKind.HTTP_500, count=3)
    for _ in range(3):
        with pytest.raises(OutcomeUnknown):
            await env.client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    assert env.client.breaker.is_open
    with pytest.raises(DarajaUnavailable):
        await env.client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    assert env.sandbox.requests_seen(Endpoint.STK_PUSH) == 3  # refused without a request
    await trio.sleep(30)
    assert env.client.breaker.state is BreakerState.HALF_OPEN
    # A failing trial re-opens it.
    env.sandbox.inject_fault(Endpoint.STK_PUSH, FaultKind.HTTP_500)
    with pytest.raises(OutcomeUnknown):
        await env.client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    assert env.client.breaker.is_open
    await trio.sleep(30)
    await env.client.stk_push(PHONE, 10, "INV1", "Deposit", CB)  # the trial succeeds
    assert _state(env.client.breaker) is BreakerState.CLOSED
    assert env.sandbox.requests_seen(Endpoint.STK_PUSH) == 5


async def test_business_rejections_do_not_trip_the_breaker(
    env: Env, autojump_clock: MockClock
) -> None:
    await env.client.b2c_payment("d", PHONE, 100, "Withdrawal", RESULT, TIMEOUT)
    for _ in range(5):
        with pytest.raises(Exception, match="Duplicate"):
            await env.client.b2c_payment("d", PHONE, 100, "Withdrawal", RESULT, TIMEOUT)
    assert env.client.breaker.state is BreakerState.CLOSED


async def test_breaker_unit_half_open_admits_one_trial(autojump_clock: MockClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10)
    with breaker.guard() as attempt:
        attempt.failure()
    assert breaker.is_open
    await trio.sleep(10)
    # A second caller while the trial runs is refused.
    with breaker.guard(), pytest.raises(DarajaUnavailable), breaker.guard():
        pass
    # A trial without a verdict (e.g. cancelled) frees the slot, stays half-open.
    assert breaker.state is BreakerState.HALF_OPEN
    with breaker.guard() as attempt:
        attempt.success()
    assert _state(breaker) is BreakerState.CLOSED


async def test_sandbox_reset_drops_pending_callbacks(env: Env, autojump_clock: MockClock) -> None:
    env.sandbox.script_customer(PHONE, delay_s=1)
    await env.client.stk_push(PHONE, 10, "INV1", "Deposit", CB)
    await trio.sleep(0.5)
    env.sandbox.reset()
    await trio.sleep(100)
    assert env.receiver.received == []
    assert env.sandbox.world.collections == []


def _state(breaker: CircuitBreaker) -> BreakerState:
    """Read the state afresh (keeps type checkers from narrowing across calls)."""
    return breaker.state
