"""The same sandbox and client over real sockets (hypercorn on 127.0.0.1).

Real clock, but nothing waits on time to pass: customer and result delays are
zero and the tests wait on the receiver's events. Every server runs in the
test's nursery, which is cancelled at the end.
"""

from __future__ import annotations

import random
from typing import Any, cast

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from penpay.actors.daraja import DarajaClient, OutcomeUnknown, parse_b2c_result, parse_stk_callback
from penpay.sandbox.daraja import DarajaSandbox, Endpoint, FaultKind, serve_daraja_sandbox
from tests.daraja.conftest import PHONE, Receiver, client_config, sandbox_config, wall_clock

pytestmark = pytest.mark.integration


async def _serve_receiver(
    receiver: Receiver, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    await serve(cast(Any, receiver.app), config, task_status=task_status)


async def _start(
    nursery: trio.Nursery, **sandbox_overrides: Any
) -> tuple[DarajaSandbox, str, Receiver, str]:
    receiver = Receiver()
    [receiver_url] = await nursery.start(_serve_receiver, receiver)
    overrides = {"default_customer_delay_s": 0.0, "result_delay_s": 0.0, **sandbox_overrides}
    sandbox, url = await nursery.start(
        lambda task_status: serve_daraja_sandbox(
            "127.0.0.1",
            0,
            config=sandbox_config(**overrides),
            wall_clock=wall_clock,
            rng=random.Random(11),
            task_status=task_status,
        )
    )
    return sandbox, url, receiver, receiver_url


async def test_stk_push_and_callback_over_sockets() -> None:
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        _, url, receiver, receiver_url = await _start(nursery)
        client = DarajaClient(http, client_config(url), wall_clock=wall_clock)
        with trio.fail_after(10):
            accepted = await client.stk_push(
                "0708374149", 25, "INV9", "Deposit", f"{receiver_url}/cb/stk/abc"
            )
            [received] = await receiver.wait_for(1)
        assert received.path == "/cb/stk/abc"
        assert received.headers["businessshortcode"] == "174379"
        callback = parse_stk_callback(received.raw)
        assert callback.checkout_request_id == accepted.checkout_request_id
        assert callback.amount_cents == 2500 and callback.phone == PHONE
        query = await client.stk_query(accepted.checkout_request_id)
        assert query.result_code == "0"
        control = await http.get(f"{url}/__sandbox__/collections")
        assert control.json()[0]["amount_cents"] == 2500
        nursery.cancel_scope.cancel()


async def test_b2c_result_over_sockets() -> None:
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        sandbox, url, receiver, receiver_url = await _start(nursery)
        client = DarajaClient(http, client_config(url), wall_clock=wall_clock)
        with trio.fail_after(10):
            await client.b2c_payment(
                "sock-1", PHONE, 150, "Withdrawal", f"{receiver_url}/r", f"{receiver_url}/t"
            )
            [received] = await receiver.wait_for(1)
        result = parse_b2c_result(received.raw)
        assert result.result.succeeded and result.amount_cents == 15000
        assert sandbox.world.payouts[0].originator_conversation_id == "sock-1"
        nursery.cancel_scope.cancel()


async def test_timeout_fault_over_sockets_is_outcome_unknown() -> None:
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        sandbox, url, _, receiver_url = await _start(nursery, hang_s=30.0)
        client = DarajaClient(
            http, client_config(url, request_timeout_s=0.5), wall_clock=wall_clock
        )
        sandbox.inject_fault(Endpoint.STK_PUSH, FaultKind.TIMEOUT)
        with trio.fail_after(10), pytest.raises(OutcomeUnknown):
            await client.stk_push(PHONE, 10, "INV1", "Deposit", f"{receiver_url}/cb")
        assert sandbox.requests_seen(Endpoint.STK_PUSH) == 1
        nursery.cancel_scope.cancel()
