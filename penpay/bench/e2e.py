"""End-to-end benchmark: ``python run.py bench e2e --json``.

PenPay runs as its own process (``run.py serve``, embedded PostgreSQL and
Redis, rate limits off); both sandboxes run in this process on real sockets
with every customer answering at once, and the Deriv agent's daily caps and
call budget lifted. Figures, all from the same run:

- ``hello_per_s``: ``GET /healthz`` answered per second (the baseline: the
  same server, HTTP stack and loop, doing no work);
- ``deposit_post_per_s``: ``POST /deposits`` answered 202 per second,
  distinct users and Idempotency-Keys, closed loop with ``CONCURRENCY``
  callers;
- ``ratio``: deposit / hello;
- ``p50_ms`` / ``p99_ms``: an open-loop phase at half of
  ``deposit_post_per_s``, latency measured from each request's *scheduled*
  send time (no coordinated omission);
- ``completed_deposits_per_s``: deposits that reached COMPLETED (STK, the
  query, the Deriv credit, the ledger) divided by the time from the first
  request to the last completion;
- ``errors``: requests not answered with the expected status;
- ``phase_s``: the length of each timed phase (``PENPAY_BENCH_E2E_PHASE_S``,
  default 8; 60 gives the figures sustained for a minute).
"""

from __future__ import annotations

import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio

from penpay.sandbox.seed import SEED
from penpay.sandbox.standalone import (
    Peers,
    PenPayProcess,
    free_port,
    peers_on_sockets,
    penpay_env,
)
from penpay.server import SANDBOX_OPERATOR, sandbox_operator_password

USERS = 40
CONCURRENCY = 32
#: Seconds of each timed phase (closed loop, then paced); ``PENPAY_BENCH_E2E_PHASE_S``
#: lengthens them, e.g. to 60 for a sustained figure.
PHASE_S = 8.0
SETTLE_S = 60.0
DEPOSIT_CENTS = 200  # USD 2.00, the minimum


async def _users(
    http: httpx.AsyncClient, operator: dict[str, str], peers: Peers
) -> list[dict[str, str]]:
    users: list[dict[str, str]] = []
    for n in range(USERS):
        phone = f"0700{n:06d}"
        peers.daraja.script_customer("254" + phone[1:], "accept", delay_s=0.0)
        email, password = f"b{n}-{secrets.token_hex(3)}@penpay.example", secrets.token_urlsafe(16)
        created = (await http.post("/auth/register", json={
            "email": email, "phone_number": phone, "password": password})).json()
        await http.put(f"/admin/users/{created['user_id']}/status", headers=operator,
                       json={"status": "active"})
        login = await http.post("/auth/login", json={"email": email, "password": password})
        tokens = login.json()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        await http.put("/me/deriv-account", headers=auth, json={
            "deriv_login_id": SEED.client_login_id, "token": SEED.client_token})
        users.append(auth)
    return users


async def _closed_loop(
    seconds: float, call: Callable[[int], Awaitable[bool]]
) -> tuple[int, int]:
    ok = errors = 0
    deadline = trio.current_time() + seconds

    async def worker(index: int) -> None:
        nonlocal ok, errors
        n = index
        while trio.current_time() < deadline:
            if await call(n):
                ok += 1
            else:
                errors += 1
            n += CONCURRENCY

    async with trio.open_nursery() as nursery:
        for index in range(CONCURRENCY):
            nursery.start_soon(worker, index)
    return ok, errors


async def _main() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="penpay-bench-e2e-") as scratch:
        data_dir = Path(scratch)
        async with peers_on_sockets() as peers:
            agent = peers.deriv.account(SEED.agent_login_id)
            assert agent.payment_agent is not None
            agent.payment_agent.daily_count_max = 10**9
            agent.payment_agent.daily_amount_cents_max = 10**15
            peers.deriv.lift_rate_limit()
            env = penpay_env(
                peers, data_dir=data_dir, http_port=free_port(), rate_limits_enabled="0",
                deriv_calls_per_min="0", log_level="WARNING",
            )
            penpay = PenPayProcess(env, data_dir / "penpay.log")
            await penpay.start()
            base = f"http://127.0.0.1:{penpay.port}"
            limits = httpx.Limits(max_connections=CONCURRENCY * 2)
            try:
                async with httpx.AsyncClient(base_url=f"{base}/api/v1", timeout=30,
                                             limits=limits) as http:
                    login = await http.post("/auth/login", json={
                        "email": SANDBOX_OPERATOR,
                        "password": sandbox_operator_password(data_dir)})
                    operator = {"Authorization": f"Bearer {login.json()['access_token']}"}
                    users = await _users(http, operator, peers)

                    async def hello(n: int) -> bool:
                        return (await http.get(f"{base}/healthz")).status_code == 200

                    async def deposit(n: int) -> bool:
                        response = await http.post(
                            "/deposits",
                            headers={**users[n % USERS], "Idempotency-Key": secrets.token_hex(12)},
                            json={"amount_cents": DEPOSIT_CENTS, "currency": "USD"})
                        return response.status_code == 202

                    phase_s = float(os.environ.get("PENPAY_BENCH_E2E_PHASE_S", PHASE_S))
                    hello_ok, hello_errors = await _closed_loop(phase_s, hello)
                    started = time.perf_counter()
                    deposits_ok, deposit_errors = await _closed_loop(phase_s, deposit)
                    deposit_rate = deposits_ok / phase_s

                    latencies: list[float] = []
                    paced_errors = 0
                    rate = max(deposit_rate / 2, 1.0)
                    t0 = trio.current_time()
                    count = int(rate * phase_s)

                    async def scheduled(i: int) -> None:
                        nonlocal paced_errors
                        at = t0 + i / rate
                        await trio.sleep_until(at)
                        if not await deposit(i):
                            paced_errors += 1
                        latencies.append(trio.current_time() - at)

                    async with trio.open_nursery() as nursery:
                        for i in range(count):
                            nursery.start_soon(scheduled, i)
                    submitted = deposits_ok + count - paced_errors

                    completed = 0
                    with trio.move_on_after(SETTLE_S):
                        while completed < submitted:
                            metrics = (await http.get(f"{base}/metrics")).text
                            completed = _completed(metrics)
                            if completed < submitted:
                                await trio.sleep(0.5)
                    elapsed = time.perf_counter() - started
            finally:
                await penpay.stop()
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "deposit_post_per_s": round(deposit_rate, 1),
        "hello_per_s": round(hello_ok / phase_s, 1),
        "ratio": round(deposit_rate / max(hello_ok / phase_s, 1e-9), 3),
        "completed_deposits_per_s": round(completed / elapsed, 1),
        "p50_ms": round(quantiles[49] * 1000, 1),
        "p99_ms": round(quantiles[98] * 1000, 1),
        "paced_rate_per_s": round(rate, 1),
        "errors": hello_errors + deposit_errors + paced_errors,
        "phase_s": phase_s,
        "deposits_submitted": submitted,
        "deposits_completed": completed,
    }


def _completed(metrics: str) -> int:
    for line in metrics.splitlines():
        if line.startswith('penpay_transactions{status="COMPLETED"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def run() -> dict[str, object]:
    return trio.run(_main)
