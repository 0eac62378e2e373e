"""``run.py demo``: a deposit and a withdrawal against a running PenPay, over HTTP.

It does what a client and an operator would: registers a user, has the
sandbox operator activate it, links the sandbox's demo Deriv account, makes a
USD 10.00 deposit and a USD 5.00 withdrawal (reading the e-mailed code from
the Deriv sandbox's mailbox), prints every status change, then prints the
ledger's trial balance. It needs the server started by ``make run`` (sandbox
mode); ports come from the same ``PENPAY_*`` settings.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import trio

from penpay.config import Settings, load_settings
from penpay.sandbox.seed import SEED
from penpay.server import SANDBOX_OPERATOR, sandbox_operator_password

POLL_INTERVAL_S = 0.5
WAIT_MAX_S = 120.0
TERMINAL = {"COMPLETED", "FAILED", "REVERSED", "NEEDS_REVIEW"}


class DemoFailed(Exception):
    pass


def _check(response: httpx.Response, *expected: int) -> dict[str, Any]:
    if response.status_code not in expected:
        raise DemoFailed(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text}"
        )
    return response.json() if response.content else {}


async def _login(http: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    tokens = _check(await http.post("/auth/login", json={"email": email, "password": password}),
                    200)
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def _follow(http: httpx.AsyncClient, auth: dict[str, str], view: dict[str, Any]) -> str:
    """Print each status change of a transaction until it is terminal."""
    transaction_id, seen = view["transaction_id"], ""
    with trio.move_on_after(WAIT_MAX_S):
        while True:
            current = _check(await http.get(f"/transactions/{transaction_id}", headers=auth), 200)
            if current["status"] != seen:
                seen = current["status"]
                print(f"    {current['updated_at']}  {seen}")
            if seen in TERMINAL:
                if current.get("failure"):
                    print(f"    failure: {current['failure']}")
                return seen
            await trio.sleep(POLL_INTERVAL_S)
    raise DemoFailed(f"{transaction_id} still {seen} after {WAIT_MAX_S:g} s")


async def run_demo(settings: Settings) -> int:
    base = f"http://{settings.http_host}:{settings.http_port}/api/v1"
    deriv_control = f"http://127.0.0.1:{settings.sandbox_deriv_control_port}/__sandbox__/deriv"
    operator_password = sandbox_operator_password(Path(settings.data_dir))
    email = f"demo-{secrets.token_hex(4)}@penpay.example"
    password = secrets.token_urlsafe(16)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        print(f"1. register {email}")
        user = _check(await http.post("/auth/register", json={
            "email": email, "phone_number": "0" + SEED.client_phone[3:], "password": password,
        }), 201)
        print(f"2. the operator activates {user['user_id']}")
        operator = await _login(http, SANDBOX_OPERATOR, operator_password)
        _check(await http.put(f"/admin/users/{user['user_id']}/status", headers=operator,
                              json={"status": "active"}), 200)
        auth = await _login(http, email, password)
        print(f"3. link Deriv account {SEED.client_login_id}")
        _check(await http.put("/me/deriv-account", headers=auth, json={
            "deriv_login_id": SEED.client_login_id, "token": SEED.client_token,
        }), 200)

        quote = _check(await http.get("/quotes", headers=auth, params={
            "type": "deposit", "amount_cents": 1000, "currency": "USD"}), 200)
        print(f"4. deposit USD 10.00: pay KES {quote['kes_cents'] / 100:,.2f} "
              f"at {quote['kes_per_usd']} KES/USD")
        deposit = _check(await http.post(
            "/deposits", headers={**auth, "Idempotency-Key": secrets.token_hex(16)},
            json={"amount_cents": 1000, "currency": "USD"}), 202)
        deposit_status = await _follow(http, auth, deposit)

        print("5. withdraw USD 5.00")
        _check(await http.post("/withdrawals/verification-code", headers=auth), 202)
        async with httpx.AsyncClient(timeout=10) as control:
            response = await control.get(f"{deriv_control}/mailbox")
        if response.status_code != 200:
            raise DemoFailed(f"Deriv sandbox mailbox: {response.status_code}")
        mail: list[dict[str, str]] = response.json()
        code = [m["code"] for m in mail if m["email"] == SEED.client_email][-1]
        print(f"    code from the Deriv sandbox mailbox: {code}")
        withdrawal = _check(await http.post(
            "/withdrawals", headers={**auth, "Idempotency-Key": secrets.token_hex(16)},
            json={"amount_cents": 500, "currency": "USD", "verification_code": code}), 202)
        withdrawal_status = await _follow(http, auth, withdrawal)

        print("6. trial balance")
        trial = _check(await http.get("/admin/ledger/trial-balance", headers=operator), 200)
        for currency, line in trial["currencies"].items():
            print(f"    {currency}: debits {line['debits_posted']:>14,} "
                  f"credits {line['credits_posted']:>14,}  balanced={line['balanced']}")
    ok = deposit_status == withdrawal_status == "COMPLETED" and trial["balanced"]
    print("demo finished: " + ("deposit and withdrawal completed" if ok else "see above"))
    return 0 if ok else 1


def main() -> int:
    try:
        return trio.run(run_demo, load_settings())
    except (DemoFailed, httpx.HTTPError) as exc:
        print(f"demo failed: {exc}")
        return 1
