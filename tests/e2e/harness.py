"""A running PenPay (``serve``) on real sockets for end-to-end tests, and a client for it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from penpay.config import Settings, load_settings
from penpay.sandbox.seed import SEED
from penpay.sandbox.standalone import free_port
from penpay.server import SANDBOX_OPERATOR, sandbox_operator_password, serve
from penpay.storage import testing as storage_testing

TERMINAL = {"COMPLETED", "FAILED", "REVERSED", "NEEDS_REVIEW"}


@dataclass
class PenPay:
    settings: Settings
    http: httpx.AsyncClient  # PenPay's API
    daraja: httpx.AsyncClient  # the Daraja sandbox (its control API under /__sandbox__)
    deriv: httpx.AsyncClient  # the Deriv sandbox's control API
    operator: dict[str, str]

    async def user(self, phone: str, *, link: bool = True) -> dict[str, str]:
        """A registered, activated user (Deriv linked unless told not to); auth headers."""
        email, password = f"u-{secrets.token_hex(4)}@penpay.example", secrets.token_urlsafe(16)
        created = await self.http.post("/auth/register", json={
            "email": email, "phone_number": phone, "password": password})
        assert created.status_code == 201, created.text
        activated = await self.http.put(
            f"/admin/users/{created.json()['user_id']}/status", headers=self.operator,
            json={"status": "active"})
        assert activated.status_code == 200, activated.text
        tokens = (await self.http.post("/auth/login", json={
            "email": email, "password": password})).json()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        if link:
            linked = await self.http.put("/me/deriv-account", headers=auth, json={
                "deriv_login_id": SEED.client_login_id, "token": SEED.client_token})
            assert linked.status_code == 200, linked.text
        return auth

    async def script(self, phone: str, behaviour: str, delay_s: float = 1.0) -> None:
        response = await self.daraja.put(
            f"/__sandbox__/customers/{phone}", json={"behaviour": behaviour, "delay_s": delay_s})
        assert response.status_code == 200, response.text

    async def deposit(self, auth: dict[str, str], amount_cents: int = 1000) -> dict[str, Any]:
        response = await self.http.post(
            "/deposits", headers={**auth, "Idempotency-Key": secrets.token_hex(12)},
            json={"amount_cents": amount_cents, "currency": "USD"})
        assert response.status_code == 202, response.text
        return dict(response.json())

    async def withdraw(
        self, auth: dict[str, str], amount_cents: int = 500, code: str | None = None
    ) -> httpx.Response:
        if code is None:
            sent = await self.http.post("/withdrawals/verification-code", headers=auth)
            assert sent.status_code == 202, sent.text
            mail = (await self.deriv.get("/mailbox")).json()
            code = [m["code"] for m in mail if m["email"] == SEED.client_email][-1]
        return await self.http.post(
            "/withdrawals", headers={**auth, "Idempotency-Key": secrets.token_hex(12)},
            json={"amount_cents": amount_cents, "currency": "USD", "verification_code": code})

    async def settled(self, auth: dict[str, str], transaction_id: str) -> dict[str, Any]:
        """Poll until the transaction is terminal (or in review); real time, bounded."""
        with trio.fail_after(60):
            while True:
                view = (await self.http.get(f"/transactions/{transaction_id}", headers=auth)).json()
                if view["status"] in TERMINAL:
                    return dict(view)
                await trio.sleep(0.1)

    async def deriv_balance(self, login_id: str = SEED.client_login_id) -> int:
        return int((await self.deriv.get(f"/accounts/{login_id}")).json()["balance_cents"])

    async def assert_books_agree(self) -> None:
        """Trial balance balanced; ledger floats equal the sandboxes' own balances."""
        trial = (await self.http.get("/admin/ledger/trial-balance", headers=self.operator)).json()
        assert trial["balanced"], trial
        recon = (await self.http.get("/admin/reconciliation", headers=self.operator)).json()
        assert recon["ledger_internal"]["clean"], recon
        for line in recon["floats"]:
            assert line["drift_cents"] == 0, line


@asynccontextmanager
async def running_penpay(data_dir: Path, **overrides: Any) -> AsyncIterator[PenPay]:
    async with storage_testing.fresh_database() as database_url:
        ports = [free_port() for _ in range(4)]
        settings = load_settings(
            environ={},
            data_dir=data_dir,
            database_url=database_url,
            redis_url=storage_testing.test_redis_url(),
            redis_namespace=f"test-{secrets.token_hex(4)}",  # fresh rate limits per server
            http_port=ports[0],
            public_base_url=f"http://127.0.0.1:{ports[0]}",
            sandbox_daraja_port=ports[1],
            sandbox_deriv_port=ports[2],
            sandbox_deriv_control_port=ports[3],
            # Real time passes here: short waits before querying.
            stk_callback_wait_s=4.0,
            stk_query_interval_s=1.0,
            deriv_lookup_interval_s=0.5,
            b2c_result_wait_s=4.0,
            **overrides,
        )
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve(settings, stop=stop, task_status=task_status)
            )
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}/api/v1") as http,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[1]}") as daraja,
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{ports[3]}/__sandbox__/deriv"
                ) as deriv,
            ):
                login = await http.post("/auth/login", json={
                    "email": SANDBOX_OPERATOR, "password": sandbox_operator_password(data_dir)})
                operator = {"Authorization": f"Bearer {login.json()['access_token']}"}
                try:
                    yield PenPay(settings, http, daraja, deriv, operator)
                finally:
                    stop.set()
