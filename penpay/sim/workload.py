"""Simulated customers: register, get activated, link Deriv, deposit and withdraw.

Each user is one task with its own ``random.Random`` derived from the seed,
its own client address (so per-IP limits apply per user, as on the
internet) and its own scripted phone in the Daraja sandbox. Requests go over
HTTP to PenPay's real routes; a request the network lost (PenPay crashed
under it, or was down) is retried later with the same Idempotency-Key, and
sometimes a request is retried just because clients do that.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from penpay.sandbox.daraja import Behaviour
from penpay.sim.router import AppRouter, in_process_client
from penpay.sim.trace import Trace
from penpay.sim.world import OPERATOR_EMAIL, OPERATOR_PASSWORD, PENPAY_URL, SimWorld

API = f"{PENPAY_URL}/api/v1"
BEHAVIOURS: list[tuple[Behaviour, float]] = [
    (Behaviour.ACCEPT, 0.50),
    (Behaviour.CANCEL, 0.08),
    (Behaviour.INSUFFICIENT_FUNDS, 0.05),
    (Behaviour.WRONG_PIN, 0.05),
    (Behaviour.NO_ANSWER, 0.05),
    (Behaviour.NO_CALLBACK, 0.09),
    (Behaviour.DUPLICATE_CALLBACK, 0.09),
    (Behaviour.LATE_CALLBACK, 0.09),
]
#: Customers whose callback is missing, doubled or late (the ``callbacks`` fault).
ODD_CALLBACKS = frozenset(
    {Behaviour.NO_CALLBACK, Behaviour.DUPLICATE_CALLBACK, Behaviour.LATE_CALLBACK}
)
#: How often a client sends the same request twice (same Idempotency-Key).
RETRY_SAME_KEY_P = 0.15
#: How often a withdrawal is sent with a wrong verification code.
BAD_CODE_P = 0.05
LOST_RETRIES_MAX = 4


@dataclass
class Stats:
    """What the clients saw; the invariant checker reads it."""

    sent: int = 0
    answered: int = 0
    lost: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)
    operations_done: int = 0
    users_done: int = 0


def _lost(response: httpx.Response) -> bool:
    return "x-sim-dropped" in response.headers or "x-sim-down" in response.headers


class Client:
    """One HTTP client with its own address; traces every answer."""

    def __init__(self, router: AppRouter, ip: str, name: str, trace: Trace, stats: Stats) -> None:
        self.http = in_process_client(router, client=(ip, 40000), base_url=API)
        self.name, self.trace, self.stats = name, trace, stats
        self.headers: dict[str, str] = {}

    async def call(self, method: str, path: str, label: str, **kwargs: Any) -> httpx.Response:
        self.stats.sent += 1
        response = await self.http.request(method, path, **kwargs)
        self.stats.answered += 1
        self.stats.by_status[response.status_code] = (
            self.stats.by_status.get(response.status_code, 0) + 1
        )
        lost = _lost(response)
        self.stats.lost += lost
        self.trace.record("http", self.name, method, label, response.status_code, "lost" * lost)
        return response

    async def persist(
        self, method: str, path: str, label: str, rng: random.Random, **kwargs: Any
    ) -> httpx.Response:
        """Send; while the network loses it, wait and send the very same request again."""
        response = await self.call(method, path, label, **kwargs)
        for _ in range(LOST_RETRIES_MAX):
            if not _lost(response):
                break
            await trio.sleep(rng.uniform(5, 60))
            response = await self.call(method, path, label, **kwargs)
        return response

    async def login(self, email: str, password: str, rng: random.Random) -> bool:
        response = await self.persist(
            "POST", "/auth/login", "login", rng, json={"email": email, "password": password}
        )
        if response.status_code != 200:
            return False
        self.headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        return True


class Operator:
    """The operator who activates new accounts; logs in again when the token lapses."""

    def __init__(self, router: AppRouter, trace: Trace, stats: Stats, seed: int) -> None:
        self.client = Client(router, "10.255.255.1", "operator", trace, stats)
        self.rng = random.Random(f"{seed}-operator")
        self.lock = trio.Lock()

    async def activate(self, user_id: str) -> bool:
        async with self.lock:
            for _ in range(3):
                if not self.client.headers:
                    await self.client.login(OPERATOR_EMAIL, OPERATOR_PASSWORD, self.rng)
                response = await self.client.persist(
                    "PUT", f"/admin/users/{user_id}/status", "activate", self.rng,
                    headers=self.client.headers, json={"status": "active"},
                )
                if response.status_code == 401:
                    self.client.headers = {}
                    continue
                return response.status_code == 200
            return False


class User:
    def __init__(
        self, n: int, world: SimWorld, operator: Operator, stats: Stats, operations: int,
        *, odd_callbacks: bool = True,
    ) -> None:
        self.n = n
        self.behaviours = BEHAVIOURS if odd_callbacks else [
            (b, w) for b, w in BEHAVIOURS if b not in ODD_CALLBACKS
        ]
        self.world, self.operator, self.stats = world, operator, stats
        self.operations = operations
        self.rng = random.Random(f"{world.seed}-user-{n}")
        self.email = f"user{n}@sim.example"
        self.password = f"sim-password-{n:06d}"
        self.phone = f"2547{n:08d}"
        self.login_id = f"CR{2_000_000 + n}"
        self.token = f"sim-user-token-{n}"
        ip = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
        self.client = Client(world.router, ip, f"u{n}", world.trace, stats)

    def key(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    async def run(self, start_at_s: float, mean_gap_s: float) -> None:
        try:
            await trio.sleep(start_at_s)
            if await self.onboard():
                for _ in range(self.operations):
                    await trio.sleep(self.rng.expovariate(1 / mean_gap_s))
                    if self.rng.random() < 0.6:
                        await self.deposit()
                    else:
                        await self.withdraw()
                    self.stats.operations_done += 1
        finally:
            self.stats.users_done += 1

    async def onboard(self) -> bool:
        deriv = self.world.boxes.deriv_world
        deriv.create_account(
            self.login_id, email=self.email, fullname=f"Sim User {self.n}",
            balance_cents=self.rng.randrange(0, 200_000),
            tokens={self.token: ("read", "payments")},
        )
        self.world.boxes.daraja.script_customer(
            self.phone, "accept", balance_cents=self.rng.randrange(10**6, 10**8)
        )
        c, rng = self.client, self.rng
        response = await c.persist("POST", "/auth/register", "register", rng, json={
            "email": self.email, "phone_number": "0" + self.phone[3:], "password": self.password,
        })
        if response.status_code not in (201, 409):
            return False
        if response.status_code == 201 and not await self.operator.activate(
            response.json()["user_id"]
        ):
            return False
        if not await c.login(self.email, self.password, rng):
            return False
        response = await c.persist("PUT", "/me/deriv-account", "link", rng, headers=c.headers,
                                   json={"deriv_login_id": self.login_id, "token": self.token})
        return response.status_code == 200

    async def _authed(self, method: str, path: str, label: str, **kwargs: Any) -> httpx.Response:
        """A call with the user's token; one fresh login if it has expired."""
        headers = {**kwargs.pop("headers", {}), **self.client.headers}
        response = await self.client.persist(
            method, path, label, self.rng, headers=headers, **kwargs
        )
        if response.status_code == 401 and await self.client.login(
            self.email, self.password, self.rng
        ):
            headers.update(self.client.headers)
            response = await self.client.persist(
                method, path, label, self.rng, headers=headers, **kwargs
            )
        return response

    async def _submit(self, path: str, label: str, body: dict[str, Any]) -> None:
        """POST with a fresh key, maybe retried with the same key; follow the result once."""
        key = self.key()
        response = await self._authed("POST", path, label, headers={"Idempotency-Key": key},
                                      json=body)
        if self.rng.random() < RETRY_SAME_KEY_P:
            await trio.sleep(self.rng.uniform(0, 30))
            again = await self._authed("POST", path, label + "-retry",
                                       headers={"Idempotency-Key": key}, json=body)
            if (
                response.status_code == 202 and again.status_code == 202
                and again.json()["transaction_id"] != response.json()["transaction_id"]
            ):
                self.world.trace.record("violation-idempotency", key)
                self.stats.accepted.add("idempotency-mismatch:" + key)
            response = again if response.status_code != 202 else response
        if response.status_code == 202:
            transaction_id = response.json()["transaction_id"]
            self.stats.accepted.add(transaction_id)
            await trio.sleep(self.rng.uniform(10, 300))
            await self._authed("GET", f"/transactions/{transaction_id}", "view")

    async def deposit(self) -> None:
        behaviours, weights = zip(*self.behaviours, strict=True)
        behaviour = self.rng.choices(behaviours, weights)[0]
        self.world.boxes.daraja.script_customer(
            self.phone, behaviour, delay_s=round(self.rng.uniform(1, 45), 3)
        )
        amount = self.rng.randrange(200, 20_000)
        await self._submit("/deposits", "deposit", {"amount_cents": amount, "currency": "USD"})

    async def withdraw(self) -> None:
        response = await self._authed("POST", "/withdrawals/verification-code", "code")
        if response.status_code != 202:
            return
        code = self.world.boxes.deriv_world.latest_code(self.email)
        if code is None:
            return
        if self.rng.random() < BAD_CODE_P:
            code = "WRONG" + code[::-1]
        balance = self.world.boxes.deriv_world.balance_cents(self.login_id)
        amount = self.rng.randrange(500, max(balance, 600) + 1)
        amount = min(amount, 100_000)
        await self._submit("/withdrawals", "withdrawal", {
            "amount_cents": amount, "currency": "USD", "verification_code": code,
        })


async def run_workload(
    world: SimWorld, transactions: int, stats: Stats, *, odd_callbacks: bool = True
) -> None:
    """``transactions`` operations over ``ceil(transactions / 4)`` users, then return."""
    rng = random.Random(f"{world.seed}-workload")
    operator = Operator(world.router, world.trace, stats, world.seed)
    users = max(1, (transactions + 3) // 4)
    span_s = max(600.0, transactions * 2.0)
    async with trio.open_nursery() as nursery:
        for n in range(users):
            operations = transactions // users + (1 if n < transactions % users else 0)
            user = User(n + 1, world, operator, stats, operations, odd_callbacks=odd_callbacks)
            nursery.start_soon(user.run, rng.uniform(0, span_s), 240.0)
