"""The gateway against the in-process sandbox, on a mock clock."""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from trio.testing import MockClock

from penpay.actors.deriv import (
    DerivGateway,
    DerivTimeout,
    GatewayConfig,
    InvalidToken,
    MessageConnection,
    OutcomeUnknown,
    PaymentAgentTransferError,
    RequestInvalid,
    TransferResult,
    TransportClosed,
)
from penpay.sandbox.deriv import DerivWorld, FaultKind, InProcessDerivSandbox

from .conftest import AGENT, FAST, JANE, Rig


async def test_connects_authorizes_and_tracks_balance(autojump_clock: MockClock, rig: Rig) -> None:
    gw = rig.gateway
    assert gw.agent is not None and gw.agent.loginid == AGENT
    assert await gw.wait_for_balance(lambda _: True) == 1_000_000  # the stream follows
    result = await gw.paymentagent_transfer(JANE, 1_050, "USD", "dep-1")
    assert result.client_loginid == JANE
    assert result.client_full_name == "Jane Wanjiru"
    assert result.transaction_id is not None and not result.dry_run
    assert await gw.wait_for_balance(lambda c: c == 998_950) == 998_950
    assert rig.world.balance_cents(JANE) == 51_050
    assert await gw.balance() == 998_950


async def test_dry_run_and_business_error(autojump_clock: MockClock, rig: Rig) -> None:
    gw = rig.gateway
    dry = await gw.paymentagent_transfer(JANE, 1_000, "USD", "check", dry_run=True)
    assert dry.dry_run and dry.transaction_id is None and dry.client_full_name == "Jane Wanjiru"
    with pytest.raises(PaymentAgentTransferError) as info:
        await gw.paymentagent_transfer(JANE, 999, "USD", "too-small")
    assert info.value.code == "PaymentAgentTransferError"
    assert info.value.message == "Invalid amount. Minimum is 10, maximum is 2000."
    assert rig.world.moves == []


async def test_invalid_arguments_are_refused_before_sending(
    autojump_clock: MockClock, rig: Rig
) -> None:
    for args in [
        ("CR1", 0, "USD", "x"),
        ("CR1", 100, "USD", "semi;colon"),
        ("1CR", 100, "USD", ""),
    ]:
        with pytest.raises(RequestInvalid):
            await rig.gateway.paymentagent_transfer(*args)


async def test_drop_before_apply_is_unknown_and_not_found(
    autojump_clock: MockClock, rig: Rig
) -> None:
    rig.world.inject_fault("paymentagent_transfer", FaultKind.DROP_BEFORE_APPLY)
    with pytest.raises(OutcomeUnknown) as info:
        await rig.gateway.paymentagent_transfer(JANE, 2_000, "USD", "dep-lost")
    assert info.value.call == "paymentagent_transfer"
    assert await rig.gateway.find_transfer("dep-lost") is None
    assert rig.world.moves == []
    assert rig.gateway.connects == 2  # reconnected for the statement lookup


async def test_drop_after_apply_is_unknown_and_found(autojump_clock: MockClock, rig: Rig) -> None:
    rig.world.inject_fault("paymentagent_transfer", FaultKind.DROP_AFTER_APPLY)
    with pytest.raises(OutcomeUnknown):
        await rig.gateway.paymentagent_transfer(JANE, 2_000, "USD", "dep-applied")
    found = await rig.gateway.find_transfer("dep-applied", transfer_to=JANE, amount_cents=2_000)
    assert found is not None
    assert found.amount_cents == 2_000
    (move,) = rig.world.moves
    assert found.transaction_id == move.transaction_id
    assert await rig.gateway.find_transfer("dep-applied", amount_cents=2_001) is None
    assert await rig.gateway.find_transfer("dep-appl") is None  # no prefix matches


async def test_receive_failed_says_money_moved(autojump_clock: MockClock, rig: Rig) -> None:
    rig.world.inject_fault("paymentagent_transfer", FaultKind.RECEIVE_FAILED)
    with pytest.raises(PaymentAgentTransferError) as info:
        await rig.gateway.paymentagent_transfer(JANE, 1_234, "USD", "dep-rf")
    assert info.value.message == (
        "We have deducted 12.34 USD from your account. Your funds may be temporarily "
        "unavailable until the transaction is complete."
    )
    assert info.value.money_may_have_moved
    assert await rig.gateway.find_transfer("dep-rf") is not None


async def test_injected_error_code(autojump_clock: MockClock, rig: Rig) -> None:
    rig.world.inject_fault("paymentagent_transfer", FaultKind.ERROR)
    with pytest.raises(PaymentAgentTransferError) as info:
        await rig.gateway.paymentagent_transfer(JANE, 1_000, "USD", "dep-bi102")
    assert info.value.message == "Request too frequent. Please try again later."
    rig.world.inject_fault("balance", FaultKind.ERROR, code="RateLimitExceeded", message="x")
    with pytest.raises(Exception) as other:
        await rig.gateway.balance()
    assert getattr(other.value, "code", None) == "RateLimitExceeded"


async def test_timeout_is_unknown_and_leaves_no_pending_entry(
    autojump_clock: MockClock, rig: Rig
) -> None:
    rig.world.inject_fault("paymentagent_transfer", FaultKind.DELAY, delay_s=60)
    start = trio.current_time()
    with pytest.raises(OutcomeUnknown) as info:
        await rig.gateway.paymentagent_transfer(JANE, 1_000, "USD", "dep-slow")
    assert trio.current_time() - start == pytest.approx(FAST.call_timeout_s)
    assert "no answer" in info.value.reason
    assert rig.gateway.pending_calls == 0
    await trio.sleep(60)  # the late answer arrives and is dropped
    assert rig.gateway.pending_calls == 0
    assert await rig.gateway.find_transfer("dep-slow") is not None  # it did happen
    assert len(rig.world.moves) == 1


async def test_read_call_timeout_is_retryable(autojump_clock: MockClock, rig: Rig) -> None:
    rig.world.inject_fault("balance", FaultKind.DELAY, delay_s=60)
    with pytest.raises(DerivTimeout):
        await rig.gateway.balance()
    assert await rig.gateway.balance() == 1_000_000


async def test_concurrent_calls_are_correlated(autojump_clock: MockClock, rig: Rig) -> None:
    for n in range(30):
        rig.world.set_balance(AGENT, 1_000_000 + n)  # no statement rows; use transfers below
    for n in range(10):
        await rig.gateway.paymentagent_transfer(JANE, 1_000 + n, "USD", f"seed-{n}")
    rig.world.inject_fault("statement", FaultKind.DELAY, times=None, probability=0.5, delay_s=0.5)
    results: dict[int, int] = {}

    async def statement(limit: int) -> None:
        rows = await rig.gateway.statement(limit=limit)
        results[limit] = len(rows)

    async def ping() -> None:
        await rig.gateway.ping()

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(statement, n % 10 + 1 if n < 10 else 1)
            nursery.start_soon(ping)
    assert all(count == limit for limit, count in results.items())
    assert rig.gateway.pending_calls == 0


async def test_reconnect_restores_auth_and_balance_stream(
    autojump_clock: MockClock, rig: Rig
) -> None:
    assert rig.world.drop_connections() == 1
    await trio.sleep(1)
    await rig.gateway.wait_connected()
    assert rig.gateway.connects == 2
    rig.world.set_balance(AGENT, 777)
    assert await rig.gateway.wait_for_balance(lambda c: c == 777) == 777


@asynccontextmanager
async def tight_budget(world: DerivWorld) -> AsyncIterator[tuple[DerivGateway, trio.Nursery]]:
    """A connected gateway allowed 60 calls a minute (a burst of 1, spent on authorize)."""
    config = GatewayConfig(calls_per_min=60, calls_burst=1, connect_wait_s=600)
    async with trio.open_nursery() as nursery:
        sandbox = InProcessDerivSandbox(world)
        await nursery.start(sandbox.run)
        gateway = DerivGateway(sandbox.connect, "agent-token", rng=random.Random(1),
                               config=config)
        await nursery.start(gateway.run)
        await gateway.wait_connected()
        yield gateway, nursery
        nursery.cancel_scope.cancel()


async def test_a_long_queue_for_the_call_budget_does_not_keep_the_socket_down(
    autojump_clock: MockClock, world: DerivWorld
) -> None:
    """Found by the simulation: callers queued for the budget while the socket was
    down held the handshake back past Deriv's 2-minute idle close, for ever."""
    async with tight_budget(world) as (gateway, nursery):
        for _ in range(300):  # five minutes of budget queued up
            nursery.start_soon(gateway.balance)
        await trio.testing.wait_all_tasks_blocked()
        assert world.drop_connections() == 1
        with trio.fail_after(30):  # well inside the 120 s idle close
            await trio.sleep(0.1)
            await gateway.wait_connected()
        assert gateway.connects == 2


async def test_a_call_queued_for_the_budget_goes_out_on_the_new_socket(
    autojump_clock: MockClock, world: DerivWorld
) -> None:
    """Found by the simulation: calls that queued while the socket was replaced
    failed on the old one, spending the budget on nothing."""
    async with tight_budget(world) as (gateway, _):
        answers: list[TransferResult] = []

        async def check_transfer() -> None:  # a dry run: in the budget, moves nothing
            check = await gateway.paymentagent_transfer(JANE, 1_000, "USD", "q", dry_run=True)
            answers.append(check)

        with trio.fail_after(30):
            async with trio.open_nursery() as callers:
                for _ in range(3):  # the burst went on the handshake: these queue
                    callers.start_soon(check_transfer)
                await trio.testing.wait_all_tasks_blocked()
                assert world.drop_connections() == 1
        assert len(answers) == 3
        assert gateway.connects == 2


async def test_keepalive_outlives_idle_timeout(autojump_clock: MockClock, rig: Rig) -> None:
    await trio.sleep(600)
    assert rig.gateway.connects == 1
    assert rig.gateway.connected


async def test_late_pong_forces_reconnect(autojump_clock: MockClock, rig: Rig) -> None:
    rig.world.inject_fault("ping", FaultKind.DELAY, delay_s=11)
    await trio.sleep(30 + 10 + 1)  # first keep-alive ping, 10 s pong deadline, back-off
    await rig.gateway.wait_connected()
    assert rig.gateway.connects == 2
    assert "keep-alive" in (rig.gateway.last_error or "")


async def test_own_rate_limit_stays_under_deriv_budget(autojump_clock: MockClock, rig: Rig) -> None:
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(400):  # dry runs: in the "all other calls" budget; none may hit RateLimit
            nursery.start_soon(
                functools.partial(rig.gateway.paymentagent_transfer, dry_run=True),
                JANE, 1_000, "USD", "q",
            )
    elapsed = trio.current_time() - start
    # 400 calls at 200/min after a burst of 10 (1 of it spent on authorize)
    assert elapsed == pytest.approx((400 - 9) * 60 / 200, rel=0.01)


async def test_statement_and_balance_keep_to_their_own_deriv_budget(
    autojump_clock: MockClock, rig: Rig
) -> None:
    """Deriv budgets them apart: 100/min and 2,000/h (protocols.md 2.11). Lookups
    spending it must neither hit RateLimit nor hold up the other calls."""
    asked: list[float] = []

    async def balance() -> None:
        await rig.gateway.balance()  # none may hit RateLimit (the sandbox keeps 100/min)
        asked.append(trio.current_time())

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(400):
            nursery.start_soon(balance)
        await trio.sleep(1)
        result = await rig.gateway.paymentagent_transfer(JANE, 1_000, "USD", "q", dry_run=True)
        assert result.dry_run and trio.current_time() - start < 2  # not behind the lookups
    assert max(sum(1 for u in asked if t <= u < t + 60) for t in asked) <= 95
    per_hour = sum(1 for t in asked if t < start + 3600)
    assert len(asked) == 400 and per_hour <= 1950


async def test_reconnect_backoff_is_exponential_with_jitter(
    autojump_clock: MockClock, world: DerivWorld
) -> None:
    attempts: list[float] = []
    async with trio.open_nursery() as nursery:
        sandbox = InProcessDerivSandbox(world)
        await nursery.start(sandbox.run)

        @asynccontextmanager
        async def flaky() -> AsyncIterator[MessageConnection]:
            attempts.append(trio.current_time())
            if len(attempts) <= 6:
                raise TransportClosed("connection refused")
            async with sandbox.connect() as conn:
                yield conn

        config = GatewayConfig(backoff_initial_s=1.0, backoff_max_s=8.0, backoff_jitter=0.2)
        gw = DerivGateway(flaky, "agent-token", rng=random.Random(3), config=config)
        await nursery.start(gw.run)
        await gw.wait_connected()
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        for gap, base in zip(gaps, [1, 2, 4, 8, 8, 8], strict=True):
            assert base <= gap <= base * 1.2
        nursery.cancel_scope.cancel()


async def test_invalid_agent_token_keeps_retrying(
    autojump_clock: MockClock, world: DerivWorld
) -> None:
    async with trio.open_nursery() as nursery:
        sandbox = InProcessDerivSandbox(world)
        await nursery.start(sandbox.run)
        gw = DerivGateway(sandbox.connect, "wrong", rng=random.Random(3), config=FAST)
        await nursery.start(gw.run)
        await trio.sleep(5)
        assert not gw.connected
        assert "InvalidToken" in (gw.last_error or "")
        world.add_token("wrong", AGENT, ["read", "payments"])
        await gw.wait_connected()
        nursery.cancel_scope.cancel()


async def test_user_token_verification(autojump_clock: MockClock, rig: Rig) -> None:
    info = await rig.gateway.verify_user_token("jane-token")
    assert (info.loginid, info.currency, info.fullname, info.email) == (
        JANE,
        "USD",
        "Jane Wanjiru",
        "jane@example.com",
    )
    assert not info.is_virtual and info.scopes == ("payments", "read")
    with pytest.raises(InvalidToken):
        await rig.gateway.verify_user_token("nope")
    await trio.sleep(1)
    assert rig.world.connection_count == 1  # the user sockets were closed


async def test_money_calls_go_on_while_the_balance_subscription_is_refused(
    autojump_clock: MockClock, world: DerivWorld
) -> None:
    """``balance`` is in the statement budget that lookups spend. A socket that could
    not come up until the subscription passed refused every transfer meanwhile."""
    world.inject_fault("balance", FaultKind.ERROR, times=None, code="RateLimit",
                       message="You have reached the rate limit for balance.")
    async with trio.open_nursery() as nursery:
        sandbox = InProcessDerivSandbox(world)
        await nursery.start(sandbox.run)
        gateway = DerivGateway(sandbox.connect, "agent-token", rng=random.Random(1),
                               config=GatewayConfig(connect_wait_s=5.0))
        await nursery.start(gateway.run)
        with trio.fail_after(5):
            await gateway.wait_connected()
        result = await gateway.paymentagent_transfer(JANE, 2_500, "USD", "PenPay deposit x")
        assert result.transaction_id is not None
        assert gateway.agent_balance_cents is None and gateway.connects == 1
        world.clear_faults()  # the budget is back: the stream follows within a minute
        with trio.fail_after(61):
            assert await gateway.wait_for_balance(lambda _: True) > 0
        nursery.cancel_scope.cancel()


async def test_a_socket_closed_just_after_the_handshake_is_reopened_with_back_off(
    autojump_clock: MockClock, world: DerivWorld
) -> None:
    """Each reopening spends an authorize; twice a second, for ever, it would eat
    Deriv's budgets. A session counts as working once it outlives a keep-alive."""
    world.idle_timeout_s = 0.3  # Deriv drops the socket right after authorize
    async with trio.open_nursery() as nursery:
        sandbox = InProcessDerivSandbox(world)
        await nursery.start(sandbox.run)
        gateway = DerivGateway(sandbox.connect, "agent-token", rng=random.Random(1),
                               config=GatewayConfig())
        await nursery.start(gateway.run)
        await trio.sleep(60)
        assert gateway.connects <= 8  # 1, 2, 4, 8, 16, 32 s apart, not 0.5 s
        nursery.cancel_scope.cancel()
