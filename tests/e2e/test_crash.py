"""``run.py serve`` killed with SIGKILL in the middle of a deposit and of a
withdrawal, then restarted on the same database: both finish correctly.

The sandboxes run in this test process on real sockets, so they outlive
PenPay like the real Daraja and Deriv would; PenPay runs as a real process.
A callback Daraja sends while PenPay is dead is lost (Daraja never retries),
which is exactly what recovery must survive.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from penpay.sandbox.seed import SEED
from penpay.sandbox.standalone import Peers, PenPayProcess, free_port, peers_on_sockets, penpay_env
from penpay.server import SANDBOX_OPERATOR, sandbox_operator_password
from penpay.storage import testing as storage_testing
from tests.e2e.harness import TERMINAL

pytestmark = [pytest.mark.integration, pytest.mark.storage]

REPO = Path(__file__).resolve().parents[2]
PHONE = "254700000401"


def _env(peers: Peers, database_url: str, data_dir: Path) -> dict[str, str]:
    return penpay_env(
        peers,
        data_dir=data_dir,
        http_port=free_port(),
        database_url=database_url,
        redis_url=storage_testing.test_redis_url(),
        stk_callback_wait_s="4",
        stk_query_interval_s="1",
        deriv_lookup_interval_s="0.5",
        b2c_result_wait_s="4",
    )


async def _user(http: httpx.AsyncClient, operator: dict[str, str]) -> dict[str, str]:
    email, password = f"c-{secrets.token_hex(4)}@penpay.example", secrets.token_urlsafe(16)
    created = await http.post("/auth/register", json={
        "email": email, "phone_number": "0" + PHONE[3:], "password": password})
    await http.put(f"/admin/users/{created.json()['user_id']}/status", headers=operator,
                   json={"status": "active"})
    tokens = (await http.post("/auth/login", json={"email": email, "password": password})).json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    linked = await http.put("/me/deriv-account", headers=auth, json={
        "deriv_login_id": SEED.client_login_id, "token": SEED.client_token})
    assert linked.status_code == 200, linked.text
    return auth


async def _reaches(http: httpx.AsyncClient, auth: dict[str, str], tx: str, status: str) -> None:
    with trio.fail_after(10):
        while True:
            if (await http.get(f"/transactions/{tx}", headers=auth)).json()["status"] == status:
                return
            await trio.sleep(0.05)


async def _settled(http: httpx.AsyncClient, auth: dict[str, str], tx: str) -> dict[str, Any]:
    with trio.fail_after(90):
        while True:
            view = (await http.get(f"/transactions/{tx}", headers=auth)).json()
            if view["status"] in TERMINAL:
                return dict(view)
            await trio.sleep(0.2)


async def test_killed_mid_deposit_and_mid_withdrawal_both_finish(tmp_path: Path) -> None:
    async with peers_on_sockets() as peers, storage_testing.fresh_database() as database_url:
        peers.daraja.script_customer(PHONE, "accept", delay_s=2.0)
        penpay = PenPayProcess(_env(peers, database_url, tmp_path), tmp_path / "penpay.log")
        base = f"http://127.0.0.1:{penpay.port}/api/v1"
        try:
            await penpay.start()
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                login = await http.post("/auth/login", json={
                    "email": SANDBOX_OPERATOR, "password": sandbox_operator_password(tmp_path)})
                operator = {"Authorization": f"Bearer {login.json()['access_token']}"}
                auth = await _user(http, operator)
                client_before = peers.deriv.balance_cents(SEED.client_login_id)

                # Deposit: killed while the customer is still deciding. The success
                # callback then reaches a dead server and is lost for good.
                deposit = await http.post(
                    "/deposits", headers={**auth, "Idempotency-Key": secrets.token_hex(8)},
                    json={"amount_cents": 1000, "currency": "USD"})
                assert deposit.status_code == 202, deposit.text
                tx = deposit.json()["transaction_id"]
                await _reaches(http, auth, tx, "AWAITING_MPESA_CALLBACK")  # push id persisted
                await penpay.kill()
                await trio.sleep(3)  # the customer pays and Daraja calls back: nobody there
            await penpay.start()
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                view = await _settled(http, auth, deposit.json()["transaction_id"])
                assert view["status"] == "COMPLETED", view  # settled by STK Query after restart
                assert peers.deriv.balance_cents(SEED.client_login_id) == client_before + 1000

                # Withdrawal: killed right after it was accepted, with the Deriv call
                # in flight or not yet made.
                sent = await http.post("/withdrawals/verification-code", headers=auth)
                assert sent.status_code == 202, sent.text
                code = peers.deriv.latest_code(SEED.client_email)
                assert code is not None
                withdrawal = await http.post(
                    "/withdrawals", headers={**auth, "Idempotency-Key": secrets.token_hex(8)},
                    json={"amount_cents": 500, "currency": "USD", "verification_code": code})
                assert withdrawal.status_code == 202, withdrawal.text
                await penpay.kill()
            await penpay.start()
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                view = await _settled(http, auth, withdrawal.json()["transaction_id"])
                payouts = [p for p in peers.daraja.world.payouts if p.phone == PHONE]
                after = peers.deriv.balance_cents(SEED.client_login_id)
                if view["status"] == "COMPLETED":  # the withdraw call had gone out
                    assert after == client_before + 1000 - 500
                    assert len(payouts) == 1  # paid exactly once
                else:  # killed before the call: nothing moved, the user asks again
                    assert view["status"] == "FAILED", view
                    assert after == client_before + 1000
                    assert payouts == []
                trial = (await http.get("/admin/ledger/trial-balance", headers=operator)).json()
                assert trial["balanced"], trial
                recon = (await http.get("/admin/reconciliation", headers=operator)).json()
                assert recon["ledger_internal"]["clean"], recon
            agent = peers.deriv.balance_cents(SEED.agent_login_id)
            accounts = peers.daraja.world.accounts
            ledger = {line["account"]: line["ledger_cents"] for line in recon["floats"]}
            assert ledger["deriv_float"] == agent
            assert ledger["mpesa_float"] == accounts.working_cents + accounts.utility_cents
        finally:
            await penpay.stop()
