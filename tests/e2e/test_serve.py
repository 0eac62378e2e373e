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


async def test_metrics_are_prometheus_text_labelled_by_route(tmp_path: Path) -> None:
    async with running_penpay(tmp_path) as pp:
        base = f"http://127.0.0.1:{pp.settings.http_port}"
        await pp.http.get(f"{base}/healthz")
        await pp.http.get("/transactions/00000000-0000-7000-8000-000000000000")  # 401
        response = await pp.http.get(f"{base}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'penpay_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert 'route="/api/v1/transactions/{id}",status="401"' in text  # template, not raw path
    assert 'penpay_actors{kind="ledger-account",status="running"}' in text
    assert "penpay_journal_events_total" in text
    assert "penpay_http_request_duration_seconds_bucket" in text
