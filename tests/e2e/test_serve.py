"""PenPay as ``run.py serve`` runs it: real sockets, real PostgreSQL and Redis,
both sandboxes. ``run.py demo`` (a deposit and a withdrawal) completes, then
the ledger must balance and its floats equal what the sandboxes hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from penpay.demo import run_demo
from tests.e2e.harness import running_penpay

pytestmark = [pytest.mark.integration, pytest.mark.storage]


async def test_the_demo_completes_and_the_books_agree(tmp_path: Path) -> None:
    async with running_penpay(tmp_path) as pp:
        assert await run_demo(pp.settings) == 0  # both COMPLETED, trial balance balanced
        await pp.assert_books_agree()
        ready = await pp.http.get(f"http://127.0.0.1:{pp.settings.http_port}/readyz")
        assert ready.status_code == 200
