"""The Starlette application: routes, error handling, security headers, rate limits."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from penpay.http import admin, callbacks, ledger_admin, metrics, openapi, ops, payments
from penpay.http.auth import admin as identity_admin
from penpay.http.auth import routes as identity
from penpay.http.auth.body import BODY_BYTES_MAX
from penpay.http.auth.guards import admin_only
from penpay.http.body_limit import BodyLimit
from penpay.http.headers import SecurityHeaders
from penpay.http.problems import (
    Problem,
    UnhandledErrors,
    http_exception_handler,
    problem_handler,
    unhandled_handler,
)
from penpay.http.proxies import Network, TrustedProxies
from penpay.http.ratelimit import RateLimitMiddleware
from penpay.http.services import Services

API = "/api/v1"


def create_app(services: Services, *, trusted_proxies: Iterable[Network] = ()) -> Starlette:
    """Build the app around ``services``; no I/O happens at import or build time.

    ``trusted_proxies``: the reverse proxies whose ``X-Forwarded-For`` names the
    client (see :mod:`penpay.http.proxies`); none by default.
    """
    routes = [
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", metrics.metrics_route, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_route, methods=["GET"]),
        # Identity.
        Route(f"{API}/auth/register", identity.register, methods=["POST"]),
        Route(f"{API}/auth/login", identity.login, methods=["POST"]),
        Route(f"{API}/auth/refresh", identity.refresh, methods=["POST"]),
        Route(f"{API}/auth/logout", identity.logout, methods=["POST"]),
        Route(f"{API}/auth/jwks.json", identity.jwks, methods=["GET"]),
        Route(f"{API}/me", identity.me, methods=["GET"]),
        # Operators (role admin).
        Route(f"{API}/admin/actors", admin_only(admin.list_actors), methods=["GET"]),
        Route(
            f"{API}/admin/actors/{{kind}}/{{key}}", admin_only(admin.get_actor), methods=["GET"]
        ),
        Route(f"{API}/admin/users/{{id}}/status", identity_admin.set_user_status, methods=["PUT"]),
        Route(f"{API}/admin/audit", identity_admin.list_audit, methods=["GET"]),
        Route(f"{API}/admin/audit/verify", identity_admin.verify_audit, methods=["GET"]),
        *payments.routes(API),
        *ledger_admin.routes(API),
        *callbacks.routes(API),
    ]
    request_metrics = metrics.Metrics(services.system)
    app = Starlette(
        routes=routes,
        # Outermost first: the client's address is settled before anything
        # reads it, every answer is counted, and security headers also land on
        # 429s from the limiter and on 500s.
        middleware=[
            Middleware(TrustedProxies, networks=trusted_proxies),
            Middleware(metrics.RequestMetrics, metrics=request_metrics),
            Middleware(SecurityHeaders),
            Middleware(UnhandledErrors),
            Middleware(RateLimitMiddleware),
            # Innermost: a 413 raised while a route reads is a Problem like any other.
            Middleware(BodyLimit, default_bytes=BODY_BYTES_MAX,
                       overrides={f"{API}/callbacks/": callbacks.BODY_BYTES_MAX}),
        ],
        exception_handlers={
            Problem: problem_handler,
            HTTPException: http_exception_handler,
            Exception: unhandled_handler,
        },
    )
    app.state.services = services
    app.state.callbacks = services.callbacks
    app.state.metrics = request_metrics
    return app
