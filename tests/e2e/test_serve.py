"""PenPay as ``run.py serve`` runs it: real sockets, real PostgreSQL and Redis,
both sandboxes. A deposit and a withdrawal go through, then the ledger must
balance and its floats must equal what the sandboxes themselves hold."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from penpay.config import Settings, load_settings
from penpay.demo import run_demo
from penpay.server import SANDBOX_OPERATOR, sandbox_operator_password, serve
from penpay.storage import testing as storage_testing

pytestmark = [pytest.mark.integration, pytest.mark.storage]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def running_penpay(data_dir: Path) -> AsyncIterator[Settings]:
    async with storage_testing.fresh_database() as database_url:
        http_port = free_port()
        settings = load_settings(
            environ={},
            data_dir=data_dir,
            database_url=database_url,
            redis_url=storage_testing.test_redis_url(),
            http_port=http_port,
            public_base_url=f"http://127.0.0.1:{http_port}",
            sandbox_daraja_port=free_port(),
            sandbox_deriv_port=free_port(),
            sandbox_deriv_control_port=free_port(),
        )
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: serve(settings, stop=stop,
                                                          task_status=task_status))
            try:
                yield settings
            finally:
                stop.set()


async def _operator(http: httpx.AsyncClient, data_dir: Path) -> dict[str, str]:
    response = await http.post("/auth/login", json={
        "email": SANDBOX_OPERATOR, "password": sandbox_operator_password(data_dir)})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_a_deposit_and_a_withdrawal_complete_and_the_books_agree(tmp_path: Path) -> None:
    async with running_penpay(tmp_path) as settings:
        assert await run_demo(settings) == 0  # both COMPLETED, trial balance balanced
        base = f"http://127.0.0.1:{settings.http_port}/api/v1"
        async with httpx.AsyncClient(base_url=base) as http:
            operator = await _operator(http, tmp_path)
            reconciliation: dict[str, Any] = (
                await http.get("/admin/reconciliation", headers=operator)
            ).json()
            ready = await http.get(f"http://127.0.0.1:{settings.http_port}/readyz")
    assert reconciliation["ledger_internal"]["clean"], reconciliation
    for line in reconciliation["floats"]:
        assert line["drift_cents"] == 0, line  # ledger float == the provider's balance
    assert ready.status_code == 200
