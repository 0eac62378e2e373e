"""``ping`` and ``time`` stay under Deriv's 10 per second per connection.

They are outside the call budget, but Deriv closes a socket that sends more
than 10 of them in a second (1008, protocols.md 2.2 and 2.11). Statement
lookups need Deriv's clock; asked per lookup, a burst of lookups (every
transfer in flight when a socket dropped) was a burst of ``time`` calls.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, cast

import trio
from trio.testing import MockClock

from penpay.actors.deriv import DerivGateway, MessageConnection
from penpay.actors.deriv.wire import decode
from penpay.actors.deriv_actor import DerivGatewayActor
from penpay.actors.saga import FindDerivTransfer
from penpay.engine import ActorSystem, Clock
from penpay.sandbox.deriv import DerivWorld, InProcessDerivSandbox

from .conftest import AGENT, AGENT_TOKEN, FAST, JANE

DERIV_PING_LIMIT_PER_S = 10


class Counting:
    """The client end of a socket, counting ``ping``/``time`` requests per second."""

    def __init__(self, inner: MessageConnection, sent: Counter[tuple[str, int]]) -> None:
        self.inner, self.sent = inner, sent

    async def send_message(self, message: str) -> None:
        call = next(iter(decode(message)))
        if call in ("time", "ping"):
            self.sent[(call, int(trio.current_time()))] += 1
        await self.inner.send_message(message)

    async def get_message(self) -> str:
        return await self.inner.get_message()

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def counted_gateway(
    world: DerivWorld, sent: Counter[tuple[str, int]]
) -> AsyncIterator[DerivGateway]:
    async with trio.open_nursery() as nursery:
        box = InProcessDerivSandbox(world)
        await nursery.start(box.run)

        @asynccontextmanager
        async def connect() -> AsyncIterator[Any]:
            async with box.connect() as inner:
                yield Counting(inner, sent)

        gateway = DerivGateway(connect, AGENT_TOKEN, rng=random.Random(1), config=FAST)
        await nursery.start(gateway.run)
        await gateway.wait_connected()
        yield gateway
        nursery.cancel_scope.cancel()


def worst_second(sent: Counter[tuple[str, int]]) -> int:
    per_second: Counter[int] = Counter()
    for (_, second), n in sent.items():
        per_second[second] += n
    return max(per_second.values(), default=0)


async def test_a_burst_of_lookups_asks_derivs_clock_once(
    autojump_clock: MockClock, world: DerivWorld
) -> None:
    """Regression: 15 lookups at once sent 15 ``time`` calls in one second."""
    sent: Counter[tuple[str, int]] = Counter()
    async with counted_gateway(world, sent) as gateway:
        async def no_token(user_id: str) -> str | None:
            return None

        actor = DerivGatewayActor(gateway, AGENT, no_token)
        actor.system = cast(ActorSystem, SimpleNamespace(clock=Clock(world.now())))
        now_ms = int(world.now().timestamp() * 1000)
        async with trio.open_nursery() as nursery:
            for n in range(15):
                lookup = FindDerivTransfer(f"PenPay deposit t{n} attempt 1", 2_500, JANE, now_ms)
                nursery.start_soon(actor.call, lookup, "user")
    assert sum(n for (call, _), n in sent.items() if call == "time") == 1


async def test_a_burst_of_pings_is_spread_under_derivs_limit(
    autojump_clock: MockClock, world: DerivWorld
) -> None:
    sent: Counter[tuple[str, int]] = Counter()
    async with counted_gateway(world, sent) as gateway, trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(gateway.ping)
    assert sum(sent.values()) == 30
    assert worst_second(sent) <= DERIV_PING_LIMIT_PER_S - 2  # headroom for the keep-alive


async def test_derivs_clock_is_extrapolated_then_read_again(
    autojump_clock: MockClock, world: DerivWorld
) -> None:
    sent: Counter[tuple[str, int]] = Counter()

    def time_calls() -> int:
        return sum(n for (call, _), n in sent.items() if call == "time")

    async with counted_gateway(world, sent) as gateway:
        first = await gateway.deriv_clock_s()
        await trio.sleep(100)
        later = await gateway.deriv_clock_s()
        assert time_calls() == 1
        assert abs(later - first - 100) < 1  # extrapolated on the monotonic clock
        assert abs(later - world.now().timestamp()) < 2
        await trio.sleep(gateway.config.clock_refresh_s)
        await gateway.deriv_clock_s()
        assert time_calls() == 2  # stale: read again
        connects = gateway.connects
        world.drop_connections()
        await trio.sleep(1)  # the gateway notices, backs off, reconnects
        await gateway.wait_connected()
        assert gateway.connects == connects + 1
        await gateway.deriv_clock_s()
        assert time_calls() == 3  # a new socket: read again
