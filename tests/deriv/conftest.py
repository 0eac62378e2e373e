"""Shared fixtures: a scripted Deriv world, the sandbox (in-process or socket) and the gateway."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trio

from penpay.actors.deriv import DerivGateway, GatewayConfig, websocket_connector
from penpay.actors.deriv.transport import Connector
from penpay.sandbox.deriv import (
    DerivWorld,
    InProcessDerivSandbox,
    PaymentAgentTerms,
    serve_deriv_sandbox,
)

AGENT = "CR9000001"
JANE = "CR1000001"
JOHN = "CR1000002"
VIRTUAL = "VRTC1000003"
EURO = "CR1000004"
AGENT_TOKEN = "agent-token"
JANE_TOKEN = "jane-token"
JANE_READ_TOKEN = "jane-read"
JOHN_TOKEN = "john-token"
VIRTUAL_TOKEN = "virtual-token"


def make_world(seed: int = 7) -> DerivWorld:
    """An agent with USD 10,000, two USD clients, a virtual and a EUR account."""
    world = DerivWorld(rng=random.Random(seed))
    world.create_account(
        AGENT,
        email="agent@penpay.test",
        fullname="PenPay Agent",
        balance_cents=1_000_000,
        payment_agent=PaymentAgentTerms(name="PenPay Agent"),
        tokens={AGENT_TOKEN: ["read", "payments", "admin"]},
    )
    world.create_account(
        JANE,
        email="jane@example.com",
        fullname="Jane Wanjiru",
        balance_cents=50_000,
        tokens={JANE_TOKEN: ["read", "payments"], JANE_READ_TOKEN: ["read"]},
    )
    world.create_account(
        JOHN,
        email="john@example.com",
        fullname="John Otieno",
        balance_cents=0,
        tokens={JOHN_TOKEN: ["read", "payments"]},
    )
    world.create_account(
        VIRTUAL,
        email="virtual@example.com",
        fullname="Demo Player",
        balance_cents=1_000_000,
        is_virtual=True,
        tokens={VIRTUAL_TOKEN: ["read", "payments"]},
    )
    world.create_account(
        EURO, email="euro@example.com", fullname="Euro Client", currency="EUR", balance_cents=0
    )
    return world


@pytest.fixture
def world() -> DerivWorld:
    return make_world()


FAST = GatewayConfig(call_timeout_s=5.0, connect_wait_s=5.0, backoff_initial_s=0.05)
SOCKET = GatewayConfig(
    call_timeout_s=5.0,
    connect_wait_s=5.0,
    backoff_initial_s=0.05,
    calls_per_min=2_000,  # real time: a test must not wait on the 200/min budget
    calls_burst=100,
)


@dataclass
class Rig:
    world: DerivWorld
    gateway: DerivGateway
    connect: Connector
    nursery: trio.Nursery


@pytest.fixture
async def rig(world: DerivWorld) -> AsyncIterator[Rig]:
    """Gateway connected to an in-process sandbox (use with ``autojump_clock``)."""
    async with trio.open_nursery() as nursery:
        sandbox = InProcessDerivSandbox(world)
        await nursery.start(sandbox.run)
        gateway = DerivGateway(sandbox.connect, AGENT_TOKEN, rng=random.Random(1), config=FAST)
        await nursery.start(gateway.run)
        await gateway.wait_connected()
        await gateway.wait_for_balance(lambda _: True)  # the stream is up too
        yield Rig(world, gateway, sandbox.connect, nursery)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def socket_rig(world: DerivWorld) -> AsyncIterator[Rig]:
    """Gateway connected to the sandbox over a real WebSocket on 127.0.0.1."""
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_deriv_sandbox, world, "127.0.0.1", 0)
        connect = websocket_connector(address.url)
        gateway = DerivGateway(connect, AGENT_TOKEN, rng=random.Random(1), config=SOCKET)
        await nursery.start(gateway.run)
        with trio.fail_after(10):
            await gateway.wait_connected()
            await gateway.wait_for_balance(lambda _: True)  # the stream is up too
        yield Rig(world, gateway, connect, nursery)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def sandbox(world: DerivWorld) -> AsyncIterator[InProcessDerivSandbox]:
    """The in-process sandbox alone, for raw protocol tests."""
    async with trio.open_nursery() as nursery:
        box = InProcessDerivSandbox(world)
        await nursery.start(box.run)
        yield box
        nursery.cancel_scope.cancel()
