"""Liveness and readiness: ``/healthz`` and ``/readyz``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from penpay.http.responses import json_response
from penpay.http.services import Services


async def healthz(request: Request) -> Response:
    """The process is up and its event loop answers; nothing else is checked."""
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Every dependency answers; 503 names the ones that do not."""
    services: Services = request.app.state.services
    checks = {name: bool(check()) for name, check in services.readiness.items()}
    ready = all(checks.values())
    return json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
