"""The Starlette application: routes, error handling, security headers."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from penpay.http import admin, ops
from penpay.http.headers import SecurityHeaders
from penpay.http.problems import (
    Problem,
    http_exception_handler,
    problem_handler,
    unhandled_handler,
)
from penpay.http.services import Services

API = "/api/v1"


def create_app(services: Services) -> Starlette:
    """Build the app around ``services``; no I/O happens at import or build time."""
    routes = [
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route(f"{API}/admin/actors", admin.list_actors, methods=["GET"]),
        Route(f"{API}/admin/actors/{{kind}}/{{key}}", admin.get_actor, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            Problem: problem_handler,
            HTTPException: http_exception_handler,
            Exception: unhandled_handler,
        },
    )
    app.state.services = services
    return app
