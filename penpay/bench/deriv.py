"""Deriv gateway throughput: ``ping`` round trips, 100 concurrent callers vs one at a time.

Starts the Deriv sandbox on a real 127.0.0.1 WebSocket (rate limit lifted)
in a child process, as the real Deriv is another machine, connects one
:class:`~penpay.actors.deriv.DerivGateway` (its own budget lifted too) and
measures, in the same run, how many ``ping`` calls per second complete when
callers wait for each other (sequential) and when 100 callers share the
socket, multiplexed by ``req_id`` (concurrent). Both modes go through the
same ``DerivGateway.ping`` on the same socket; they alternate for
``ROUNDS`` rounds after a warm-up of each, and each reports its best round.

``python -m penpay.bench.deriv --serve`` is the child: it prints the port
on its first line of output and serves until terminated.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time

import trio

from penpay.actors.deriv import DerivGateway, GatewayConfig, websocket_connector
from penpay.sandbox.deriv import DerivWorld, PaymentAgentTerms, serve_deriv_sandbox

CONCURRENT_CALLERS = 100
CALLS_PER_CALLER = 200
SEQUENTIAL_CALLS = 2_000
WARMUP_CALLS = 200
ROUNDS = 2


def _world() -> DerivWorld:
    world = DerivWorld(rng=random.Random(0), rate_limit_per_min=None)
    world.create_account(
        "CR9000001",
        email="agent@penpay.test",
        fullname="PenPay Agent",
        balance_cents=1_000_000,
        payment_agent=PaymentAgentTerms(),
        tokens={"bench-agent": ["read", "payments"]},
    )
    return world


async def _serve() -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_deriv_sandbox, _world(), "127.0.0.1", 0)
        print(address.port, flush=True)


async def _start_child() -> tuple[trio.Process, int]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "penpay.bench.deriv", "--serve"], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(64)
            if not chunk:
                raise RuntimeError("the sandbox process exited before reporting its port")
            line += chunk
    return process, int(line)


async def _measure() -> dict[str, object]:
    process, port = await _start_child()
    try:
        return await _measure_against(f"ws://127.0.0.1:{port}/websockets/v3")
    finally:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()


async def _measure_against(url: str) -> dict[str, object]:
    async with trio.open_nursery() as nursery:
        config = GatewayConfig(calls_per_min=None, ping_interval_s=3600.0)
        gateway = DerivGateway(
            websocket_connector(url), "bench-agent", rng=random.Random(0), config=config
        )
        await nursery.start(gateway.run)
        with trio.fail_after(10):
            await gateway.wait_connected()

        async def caller(calls: int) -> None:
            for _ in range(calls):
                await gateway.ping()

        async def sequential_round() -> float:
            start = time.perf_counter()
            await caller(SEQUENTIAL_CALLS)
            return time.perf_counter() - start

        async def concurrent_round(calls_per_caller: int) -> float:
            start = time.perf_counter()
            async with trio.open_nursery() as callers:
                for _ in range(CONCURRENT_CALLERS):
                    callers.start_soon(caller, calls_per_caller)
            return time.perf_counter() - start

        await caller(WARMUP_CALLS)
        await concurrent_round(WARMUP_CALLS // CONCURRENT_CALLERS)
        # Alternate the two modes and keep each one's best round: the same
        # treatment for both, so background load on the machine biases neither.
        sequential_s = concurrent_s = float("inf")
        for _ in range(ROUNDS):
            sequential_s = min(sequential_s, await sequential_round())
            concurrent_s = min(concurrent_s, await concurrent_round(CALLS_PER_CALLER))
        reconnects = gateway.connects - 1
        nursery.cancel_scope.cancel()

    sequential = SEQUENTIAL_CALLS / sequential_s
    concurrent = CONCURRENT_CALLERS * CALLS_PER_CALLER / concurrent_s
    return {
        "concurrent_calls_per_s": round(concurrent, 1),
        "sequential_calls_per_s": round(sequential, 1),
        "ratio": round(concurrent / sequential, 2),
        "concurrent_callers": CONCURRENT_CALLERS,
        "calls": ROUNDS * (CONCURRENT_CALLERS * CALLS_PER_CALLER + SEQUENTIAL_CALLS),
        "reconnects": reconnects,
    }


def run() -> dict[str, object]:
    """Run the benchmark (calls ``trio.run`` itself) and return its figures."""
    return trio.run(_measure)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        trio.run(_serve)
