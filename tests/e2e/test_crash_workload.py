"""Mixed deposits and withdrawals while ``run.py serve`` is SIGKILLed three times.

The sandboxes (this process) outlive PenPay (a child process), so their
records are the truth PenPay must agree with afterwards. Requests caught by
a kill are abandoned, as a client whose connection broke might; whatever
PenPay had accepted must still finish, exactly once.
"""

from __future__ import annotations

import random
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from penpay.actors.saga import short_reference
from penpay.sandbox.standalone import PenPayProcess, free_port, peers_on_sockets, penpay_env
from penpay.server import SANDBOX_OPERATOR, sandbox_operator_password
from penpay.storage import testing as storage_testing
from tests.e2e.harness import TERMINAL

pytestmark = [pytest.mark.integration, pytest.mark.storage]

USERS = 6
TRANSACTIONS = 200
KILLS = 3


async def test_three_kills_during_two_hundred_transactions(tmp_path: Path) -> None:
    rng = random.Random(2026)
    async with peers_on_sockets() as peers, storage_testing.fresh_database() as database_url:
        peers.deriv.lift_rate_limit()
        env = penpay_env(
            peers, data_dir=tmp_path, http_port=free_port(), database_url=database_url,
            redis_url=storage_testing.test_redis_url(), rate_limits_enabled="0",
            deriv_calls_per_min="0",  # Deriv's 220/min would make this test last minutes
            stk_callback_wait_s="4", stk_query_interval_s="1", deriv_lookup_interval_s="0.5",
            b2c_result_wait_s="4",
        )
        penpay = PenPayProcess(env, tmp_path / "penpay.log")
        base = f"http://127.0.0.1:{penpay.port}/api/v1"
        server = {"up": trio.Event()}  # replaced by a fresh Event while PenPay is down
        try:
            await penpay.start()
            server["up"].set()
            async with httpx.AsyncClient(base_url=base, timeout=15) as http:
                login = await http.post("/auth/login", json={
                    "email": SANDBOX_OPERATOR, "password": sandbox_operator_password(tmp_path)})
                operator = {"Authorization": f"Bearer {login.json()['access_token']}"}
                users = []
                for n in range(USERS):
                    login_id, token, email = f"CR70000{n}", f"crash-token-{n:04d}", f"w{n}@x.test"
                    peers.deriv.create_account(
                        login_id, email=email, fullname=f"Client {n}", balance_cents=200_000,
                        tokens={token: ("read", "payments")})
                    phone = f"07000005{n:02d}"
                    peers.daraja.script_customer("254" + phone[1:], "accept", delay_s=0.5)
                    users.append(await _user(http, operator, phone, login_id, token, email))

                submitted = 0
                reached = [trio.Event() for _ in range(KILLS)]  # kill points in the workload

                async def client(auth: dict[str, str], email: str) -> None:
                    nonlocal submitted
                    while submitted < TRANSACTIONS:
                        submitted += 1
                        for k in range(KILLS):
                            if submitted == TRANSACTIONS * (k + 1) // (KILLS + 1):
                                reached[k].set()
                        await server["up"].wait()
                        try:
                            if rng.random() < 0.7:
                                await http.post(
                                    "/deposits",
                                    headers={**auth, "Idempotency-Key": secrets.token_hex(8)},
                                    json={"amount_cents": rng.randint(200, 5000),
                                          "currency": "USD"})
                            else:
                                sent = await http.post("/withdrawals/verification-code",
                                                       headers=auth)
                                code = peers.deriv.latest_code(email)
                                if sent.status_code == 202 and code is not None:
                                    await http.post(
                                        "/withdrawals",
                                        headers={**auth,
                                                 "Idempotency-Key": secrets.token_hex(8)},
                                        json={"amount_cents": rng.randint(500, 3000),
                                              "currency": "USD", "verification_code": code})
                        except httpx.TransportError:
                            pass  # caught by a kill: abandoned
                        await trio.sleep(rng.uniform(0.0, 0.05))

                async def killer() -> None:
                    for k in range(KILLS):
                        target = TRANSACTIONS * (k + 1) // (KILLS + 1)
                        await reached[k].wait()
                        assert submitted >= target
                        server["up"] = trio.Event()  # clients pause while it is down
                        await penpay.kill()
                        await penpay.start()
                        server["up"].set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(killer)
                    for auth, email in users:
                        nursery.start_soon(client, auth, email)

                views = await _all_settled(http, operator)
                trial = (await http.get("/admin/ledger/trial-balance", headers=operator)).json()
                recon = (await http.get("/admin/reconciliation", headers=operator)).json()
        finally:
            await penpay.stop()

        assert len(views) > TRANSACTIONS // 2, len(views)
        assert trial["balanced"], trial
        assert recon["ledger_internal"]["clean"], recon
        # Exactly once, by the sandboxes' own records.
        credits = Counter(
            m.description for m in peers.deriv.moves
            if m.kind == "paymentagent_transfer" and "PenPay deposit" in m.description
        )
        for view in views:
            if view["type"] == "deposit":
                times = sum(n for d, n in credits.items() if view["transaction_id"] in d)
                assert times <= 1, view
                assert (times == 1) == (view["status"] == "COMPLETED"), view
        payouts = Counter(p.originator_conversation_id for p in peers.daraja.world.payouts)
        assert all(n == 1 for n in payouts.values()), payouts
        # The floats equal the providers', except collections PenPay could not learn of,
        # which must all belong to deposits awaiting an operator.
        ledger = {line["account"]: line["ledger_cents"] for line in recon["floats"]}
        assert ledger["deriv_float"] == peers.deriv.balance_cents("CR9000001")
        accounts = peers.daraja.world.accounts
        unknown = _collections_awaiting_review(peers, views)
        assert ledger["mpesa_float"] + unknown == accounts.working_cents + accounts.utility_cents


async def _user(
    http: httpx.AsyncClient, operator: dict[str, str], phone: str, login_id: str, token: str,
    email: str,
) -> tuple[dict[str, str], str]:
    user_email, password = f"k-{secrets.token_hex(4)}@penpay.example", secrets.token_urlsafe(16)
    created = await http.post("/auth/register", json={
        "email": user_email, "phone_number": phone, "password": password})
    await http.put(f"/admin/users/{created.json()['user_id']}/status", headers=operator,
                   json={"status": "active"})
    tokens = (await http.post("/auth/login", json={
        "email": user_email, "password": password})).json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    linked = await http.put("/me/deriv-account", headers=auth,
                            json={"deriv_login_id": login_id, "token": token})
    assert linked.status_code == 200, linked.text
    return auth, email


async def _all_settled(http: httpx.AsyncClient, operator: dict[str, str]) -> list[Any]:
    with trio.fail_after(120):
        while True:
            views: list[Any] = []
            cursor = None
            while True:
                params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
                page = (await http.get("/admin/transactions", headers=operator,
                                       params=params)).json()
                views += page["items"]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            if all(v["status"] in TERMINAL for v in views):
                return views
            await trio.sleep(0.5)


def _collections_awaiting_review(peers: Any, views: list[Any]) -> int:
    by_reference = {tx.account_reference: tx.checkout_request_id
                    for tx in peers.daraja.world.stk.values()}
    collected = {c.checkout_request_id: c.amount_cents for c in peers.daraja.world.collections}
    total = 0
    for view in views:
        if view["type"] == "deposit" and view["status"] == "NEEDS_REVIEW":
            checkout = view["mpesa"]["checkout_request_id"] or by_reference.get(
                short_reference(view["transaction_id"]))
            if view["mpesa"]["receipt_number"] is None:
                total += collected.get(checkout or "", 0)
    return total
