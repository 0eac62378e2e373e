"""The gateway against ``serve_deriv_sandbox`` over real WebSockets on 127.0.0.1.

Real clock; every wait is on an event or a result, never a sleep to pass.
"""

from __future__ import annotations

import random
from decimal import Decimal

import httpx
import pytest
import trio

from penpay.actors.deriv import (
    DerivGateway,
    GatewayConfig,
    InvalidToken,
    OutcomeUnknown,
    PaymentAgentTransferError,
    PaymentAgentWithdrawError,
    TransportClosed,
    websocket_connector,
)
from penpay.sandbox.deriv import DerivWorld, FaultKind, serve_control_api, serve_deriv_sandbox

from .conftest import AGENT, AGENT_TOKEN, JANE, JANE_READ_TOKEN, JANE_TOKEN, JOHN_TOKEN, Rig
from .wsclient import Raw

pytestmark = pytest.mark.integration

JANE_EMAIL = "jane@example.com"


async def test_transfer_success_and_balance_push(socket_rig: Rig) -> None:
    gw = socket_rig.gateway
    assert gw.agent is not None and gw.agent.loginid == AGENT
    result = await gw.paymentagent_transfer(JANE, 12_345, "USD", "dep 0001")
    assert result.transaction_id is not None
    with trio.fail_after(5):
        assert await gw.wait_for_balance(lambda c: c == 1_000_000 - 12_345)
    found = await gw.find_transfer("dep 0001", transfer_to=JANE, amount_cents=12_345)
    assert found is not None and found.transaction_id == result.transaction_id
    assert socket_rig.world.balance_cents(JANE) == 50_000 + 12_345


async def test_protocol_errors_over_the_socket(socket_rig: Rig) -> None:
    async with socket_rig.connect() as conn:
        raw = Raw(conn)
        assert (await raw.error({"balance": 1}))["code"] == "AuthorizationRequired"
        assert (await raw.error({"authorize": "bad"}))["code"] == "InvalidToken"
        await raw.ok({"authorize": JANE_READ_TOKEN})
        transfer = {
            "paymentagent_transfer": 1,
            "amount": 10,
            "currency": "USD",
            "transfer_to": AGENT,
        }
        assert (await raw.error(transfer))["code"] == "PermissionDenied"
        await raw.ok({"authorize": AGENT_TOKEN})
        error = await raw.error({**transfer, "transfer_to": JANE, "extra": 1})
        assert error["code"] == "InputValidationFailed"
        error = await raw.error({**transfer, "transfer_to": JANE, "amount": Decimal("10.005")})
        assert error["code"] == "PaymentAgentTransferError"
        first = await raw.ok({"balance": 1, "subscribe": 1})
        assert (await raw.error({"balance": 1, "subscribe": 1}))["code"] == "AlreadySubscribed"
        assert (await raw.ok({"forget": first["subscription"]["id"]}))["forget"] == 1
    socket_rig.world.set_rate_limit(2)
    async with socket_rig.connect() as conn:
        raw = Raw(conn)
        await raw.ok({"authorize": AGENT_TOKEN})
        await raw.ok({"authorize": AGENT_TOKEN})
        assert (await raw.error({"authorize": AGENT_TOKEN}))["code"] == "RateLimit"
        assert (await raw.ok({"ping": 1}))["ping"] == "pong"


async def test_business_error(socket_rig: Rig) -> None:
    socket_rig.world.set_balance(AGENT, 500)
    with pytest.raises(PaymentAgentTransferError) as info:
        await socket_rig.gateway.paymentagent_transfer(JANE, 1_000, "USD", "dep-poor")
    assert info.value.message == "Your account balance is insufficient for this transaction."


async def test_drop_before_apply(socket_rig: Rig) -> None:
    socket_rig.world.inject_fault("paymentagent_transfer", FaultKind.DROP_BEFORE_APPLY)
    with pytest.raises(OutcomeUnknown):
        await socket_rig.gateway.paymentagent_transfer(JANE, 1_000, "USD", "dep-before")
    assert await socket_rig.gateway.find_transfer("dep-before") is None
    assert socket_rig.world.moves == []


async def test_drop_after_apply(socket_rig: Rig) -> None:
    socket_rig.world.inject_fault("paymentagent_transfer", FaultKind.DROP_AFTER_APPLY)
    with pytest.raises(OutcomeUnknown):
        await socket_rig.gateway.paymentagent_transfer(JANE, 1_000, "USD", "dep-after")
    found = await socket_rig.gateway.find_transfer("dep-after")
    assert found is not None and found.amount_cents == 1_000
    assert len(socket_rig.world.moves) == 1  # the sandbox saw exactly one transfer


async def test_receive_failed_and_injected_error(socket_rig: Rig) -> None:
    world = socket_rig.world
    world.inject_fault("paymentagent_transfer", FaultKind.RECEIVE_FAILED)
    with pytest.raises(PaymentAgentTransferError) as info:
        await socket_rig.gateway.paymentagent_transfer(JANE, 1_000, "USD", "dep-rf")
    assert info.value.money_may_have_moved
    assert await socket_rig.gateway.find_transfer("dep-rf") is not None
    world.inject_fault("paymentagent_transfer", FaultKind.ERROR, code="BI102")
    with pytest.raises(Exception) as other:
        await socket_rig.gateway.paymentagent_transfer(JANE, 1_000, "USD", "dep-err")
    assert getattr(other.value, "code", None) == "BI102"
    assert len(world.moves) == 1


async def test_delay_beyond_timeout_is_unknown(world: DerivWorld) -> None:
    world.inject_fault("paymentagent_transfer", FaultKind.DELAY, delay_s=2.0)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_deriv_sandbox, world, "127.0.0.1", 0)
        config = GatewayConfig(call_timeout_s=0.2, backoff_initial_s=0.05)
        gw = DerivGateway(
            websocket_connector(address.url), AGENT_TOKEN, rng=random.Random(2), config=config
        )
        await nursery.start(gw.run)
        with pytest.raises(OutcomeUnknown):
            await gw.paymentagent_transfer(JANE, 1_000, "USD", "dep-slow")
        assert gw.pending_calls == 0
        nursery.cancel_scope.cancel()


async def test_reconnect_mid_stream(socket_rig: Rig) -> None:
    gw = socket_rig.gateway
    assert socket_rig.world.drop_connections() == 1
    with trio.fail_after(5):
        while gw.connects < 2:
            await gw.wait_connected()
            await trio.lowlevel.checkpoint()
    socket_rig.world.set_balance(AGENT, 4_242)
    with trio.fail_after(5):
        assert await gw.wait_for_balance(lambda c: c == 4_242) == 4_242
    await gw.paymentagent_transfer(JANE, 1_000, "USD", "after-reconnect")
    with trio.fail_after(5):
        await gw.wait_for_balance(lambda c: c == 3_242)


async def test_user_token_invalid(socket_rig: Rig) -> None:
    with pytest.raises(InvalidToken):
        await socket_rig.gateway.verify_user_token("not-a-token")
    info = await socket_rig.gateway.verify_user_token(JANE_TOKEN)
    assert info.loginid == JANE and info.email == JANE_EMAIL


async def test_fifty_concurrent_calls_on_one_socket(socket_rig: Rig) -> None:
    gw = socket_rig.gateway
    for n in range(5):
        await gw.paymentagent_transfer(JANE, 1_000 + n, "USD", f"seed {n}")
    socket_rig.world.inject_fault(
        "statement", FaultKind.DELAY, times=None, probability=0.5, delay_s=0.01
    )
    seen: list[tuple[int, int]] = []

    async def statement(limit: int) -> None:
        seen.append((limit, len(await gw.statement(limit=limit))))

    async with trio.open_nursery() as nursery:
        for n in range(25):
            nursery.start_soon(statement, n % 5 + 1)
            nursery.start_soon(gw.ping)
    assert len(seen) == 25
    assert all(limit == count for limit, count in seen)
    assert gw.connects == 1 and gw.pending_calls == 0


async def test_withdrawal_codes(socket_rig: Rig) -> None:
    gw, world = socket_rig.gateway, socket_rig.world

    async def fresh_code() -> str:
        await gw.request_withdrawal_code(JANE_TOKEN, JANE_EMAIL)
        code = world.latest_code(JANE_EMAIL)
        assert code is not None
        return code

    with pytest.raises(InvalidToken):  # never issued
        await gw.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", "abcdefgh", "wd")
    superseded = await fresh_code()
    code = await fresh_code()
    with pytest.raises(InvalidToken):
        await gw.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", superseded, "wd")
    result = await gw.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", code, "wd one")
    assert result.transaction_id is not None
    with pytest.raises(InvalidToken):  # reused
        await gw.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", code, "wd")
    expired = await fresh_code()
    world.expire_codes(JANE_EMAIL)
    with pytest.raises(InvalidToken):
        await gw.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", expired, "wd")
    await gw.request_withdrawal_code(JOHN_TOKEN, "john@example.com")
    with pytest.raises(Exception) as info:
        johns = world.latest_code("john@example.com")
        assert johns is not None
        await gw.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", johns, "wd")
    assert getattr(info.value, "code", None) == "BadSession"
    with pytest.raises(PaymentAgentWithdrawError):
        await gw.paymentagent_withdraw(JANE_TOKEN, AGENT, 900, "USD", await fresh_code(), "")
    assert world.balance_cents(JANE) == 49_000
    assert world.statement_of(AGENT)[0].longcode.endswith("Client note: wd one")


async def test_withdraw_drop_before_apply(socket_rig: Rig) -> None:
    gw, world = socket_rig.gateway, socket_rig.world
    await gw.request_withdrawal_code(JANE_TOKEN, JANE_EMAIL)
    code = world.latest_code(JANE_EMAIL)
    assert code is not None
    world.inject_fault("paymentagent_withdraw", FaultKind.DROP_BEFORE_APPLY)
    with pytest.raises(OutcomeUnknown):
        await gw.paymentagent_withdraw(JANE_TOKEN, AGENT, 1_000, "USD", code, "wd")
    assert world.moves == []


async def test_wrong_path_is_refused(socket_rig: Rig, world: DerivWorld) -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_deriv_sandbox, world, "127.0.0.1", 0)
        connect = websocket_connector(f"ws://127.0.0.1:{address.port}/nope")
        with pytest.raises(TransportClosed):
            async with connect():
                pass
        nursery.cancel_scope.cancel()


async def test_control_http_api(world: DerivWorld) -> None:
    async with trio.open_nursery() as nursery:
        base = await nursery.start(serve_control_api, world, "127.0.0.1", 0)
        prefix = f"{base}/__sandbox__/deriv"
        async with httpx.AsyncClient(base_url=prefix) as http:
            created = await http.post(
                "/accounts",
                json={
                    "loginid": "CR7000001",
                    "email": "new@example.com",
                    "fullname": "New Client",
                    "balance_cents": 2_500,
                    "tokens": {"new-token": ["read", "payments"]},
                },
            )
            assert created.status_code == 201, created.text
            assert (await http.get("/accounts/CR7000001")).json()["balance_cents"] == 2_500
            assert (await http.get("/accounts/CR0")).status_code == 404
            put = await http.put("/accounts/CR7000001/balance", json={"balance_cents": 99})
            assert put.json()["balance_cents"] == 99
            fault = await http.post(
                "/faults", json={"call": "paymentagent_transfer", "kind": "drop_after_apply"}
            )
            assert fault.status_code == 201
            assert len((await http.get("/faults")).json()) == 1
            await http.delete("/faults")
            assert world.faults == []
            assert (await http.put("/rate-limit", json={"per_minute": None})).json() == {
                "per_minute": None
            }
            world.issue_code("new@example.com", "paymentagent_withdraw")
            mail = (await http.get("/mailbox", params={"email": "new@example.com"})).json()
            assert len(mail[0]["code"]) == 8
            assert (await http.post("/codes/expire")).json() == {"expired": 1}
            assert (await http.get("/accounts/CR7000001/statement")).json() == []
            assert (await http.post("/connections/drop")).json() == {"dropped": 0}
            bad = await http.post("/faults", json={"call": "x", "kind": "nope"})
            assert bad.status_code == 400
        nursery.cancel_scope.cancel()
