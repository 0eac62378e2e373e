"""Actor-runtime benchmark: ``python run.py bench engine --json``.

Figures, all measured in one process on trio's real clock:

- ``ask_per_s``: sequential ``ask`` round trips to one actor;
- ``baseline_ask_per_s``: the same loop over two bare trio memory channels
  (request, response), the floor any actor runtime on trio builds on;
- ``ratio``: ask / baseline;
- ``tell_per_s_1000_actors``: ``tell``s spread over 1,000 actors by 10
  senders, until every message has been handled;
- ``activation_us``: per actor, activating 100,000 actors through their
  first message until all have handled it;
- ``idle_actor_bytes``: memory per idle actor (tracemalloc, 100,000 actors).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any

import trio

from penpay.engine import Actor, ActorSystem, EngineConfig, open_actor_system
from penpay.engine.tuning import tune_gc

ASKS = 50_000
TELLS = 200_000
ACTIVATIONS = 100_000


class _Echo(Actor):
    kind = "bench-echo"

    def __init__(self) -> None:
        self.seen = 0

    async def receive(self, message: Any) -> Any:
        self.seen += 1
        return message


async def _baseline_asks(n: int) -> float:
    req_send, req_recv = trio.open_memory_channel[int](1)
    resp_send, resp_recv = trio.open_memory_channel[int](1)

    async def server() -> None:
        async for item in req_recv:
            await resp_send.send(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        started = time.perf_counter()
        for i in range(n):
            await req_send.send(i)
            await resp_recv.receive()
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return n / elapsed


async def _actor_asks(n: int) -> float:
    async with open_actor_system() as system:
        ref = system.ref(_Echo, "echo")
        await ref.ask(0)
        started = time.perf_counter()
        for i in range(n):
            await ref.ask(i)
        return n / (time.perf_counter() - started)


async def _tells(n: int, actors: int = 1000, senders: int = 10) -> float:
    config = EngineConfig(passivate_after_s=None)
    async with open_actor_system(config=config) as system:
        refs = [system.ref(_Echo, str(i)) for i in range(actors)]
        for ref in refs:
            await ref.ask(0)
        done = trio.Event()
        remaining = senders

        async def sender(offset: int) -> None:
            nonlocal remaining
            for i in range(offset, n, senders):
                await refs[i % actors].tell(i)
            remaining -= 1
            if remaining == 0:
                done.set()

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for s in range(senders):
                nursery.start_soon(sender, s)
        await done.wait()
        for ref in refs:  # each mailbox is FIFO: an answered ask means all tells were handled
            await ref.ask(0)
        return n / (time.perf_counter() - started)


class _Countdown:
    """Sets ``done`` when ``remaining`` first messages have been handled."""

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining
        self.done = trio.Event()

    def tick(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


class _Counted(Actor):
    kind = "bench-counted"
    countdown: _Countdown

    async def receive(self, message: Any) -> Any:
        self.countdown.tick()
        return None


async def _activate_many(system: ActorSystem, n: int) -> None:
    countdown = _Countdown(n)
    system.register(_Counted, lambda: _with_countdown(countdown))
    for i in range(n):
        system.ref(_Counted, str(i)).tell_nowait(i)
    await countdown.done.wait()


def _with_countdown(countdown: _Countdown) -> _Counted:
    actor = _Counted()
    actor.countdown = countdown
    return actor


async def _activations(n: int) -> float:
    config = EngineConfig(passivate_after_s=None)
    async with open_actor_system(config=config) as system:
        started = time.perf_counter()
        await _activate_many(system, n)
        return (time.perf_counter() - started) / n * 1e6


async def _idle_bytes(n: int) -> float:
    config = EngineConfig(passivate_after_s=None)
    async with open_actor_system(config=config) as system:
        await system.ref(_Echo, "warm").ask(0)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await _activate_many(system, n)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return (after - before) / n


async def _main() -> dict[str, object]:
    baseline = await _baseline_asks(ASKS)
    asks = await _actor_asks(ASKS)
    tells = await _tells(TELLS)
    activation = await _activations(ACTIVATIONS)
    idle = await _idle_bytes(ACTIVATIONS)
    return {
        "ask_per_s": round(asks),
        "baseline_ask_per_s": round(baseline),
        "ratio": round(asks / baseline, 3),
        "tell_per_s_1000_actors": round(tells),
        "activation_us": round(activation, 1),
        "idle_actor_bytes": round(idle),
    }


def run() -> dict[str, object]:
    tune_gc()  # as run.py serve does
    return trio.run(_main)
