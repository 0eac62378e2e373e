"""Schemathesis against /openapi.json of the running server: no 5xx, and every
response conforms to the schema. Rate limits are switched off so the generated
requests reach the handlers instead of the limiter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.e2e.harness import running_penpay

pytestmark = [pytest.mark.integration, pytest.mark.storage]

SCHEMATHESIS = Path(sys.executable).parent / "st"


@pytest.mark.parametrize("role", ["user", "admin"])
async def test_no_server_error_and_no_schema_violation(tmp_path: Path, role: str) -> None:
    async with running_penpay(tmp_path, rate_limits_enabled=False) as pp:
        headers = pp.operator if role == "admin" else await pp.user("0712345678")
        url = f"http://127.0.0.1:{pp.settings.http_port}/openapi.json"
        command = [
            str(SCHEMATHESIS), "run", url, "--checks",
            "not_a_server_error,response_schema_conformance", "--max-examples", "25",
            "--seed", "1", "--no-color", "--header", f"Authorization:{headers['Authorization']}",
        ]
        result = await trio.to_thread.run_sync(
            lambda: subprocess.run(command, capture_output=True, text=True, timeout=300)
        )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
