"""Authentication of requests: :func:`require_user` and the :func:`admin_only` guard.

``principal = await require_user(request)`` verifies the Bearer access token
(401 ``unauthorized`` if it is missing or invalid) and, with ``role=``, the
role (403 ``forbidden``). The result is cached on the request, so a wrapper
(``@idempotent``) and the route can both call it at the cost of one check.

The token is verified statelessly: a suspended user's sessions are revoked
at once (no new access tokens), and their last access token stops working
within its 900 s lifetime. Routes that move money, and every role-guarded
(admin) route, also check the user's status and role in the store.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import TYPE_CHECKING

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from penpay.http.auth.tokens import InvalidToken
from penpay.http.problems import Problem

if TYPE_CHECKING:
    from penpay.http.services import Services

Endpoint = Callable[[Request], Awaitable[Response]]
_STATE_KEY = "principal"
_ROLE_KEY = "role_confirmed"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="penpay"'}


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling, from a verified access token."""

    user_id: uuid.UUID
    role: str
    token_id: str


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers=_CHALLENGE)


async def require_user(request: Request, role: str | None = None) -> Principal:
    """The caller, from ``Authorization: Bearer …``; 401/403 as :class:`Problem` otherwise."""
    principal: Principal | None = request.scope.get("state", {}).get(_STATE_KEY)
    if principal is None:
        services: Services = request.app.state.services
        if services.auth is None:
            # No token authority configured: nothing can be authenticated.
            raise _unauthorized("Authentication is not available.")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("A Bearer access token is required.")
        try:
            claims = services.auth.tokens.verify(token.strip())
            user_id = uuid.UUID(claims.sub)
        except (InvalidToken, ValueError):
            raise _unauthorized("The access token is not valid.") from None
        principal = Principal(user_id=user_id, role=claims.role, token_id=claims.jti)
        request.scope.setdefault("state", {})[_STATE_KEY] = principal
    state = request.scope.setdefault("state", {})
    if role is not None and state.get(_ROLE_KEY) != role:
        await _still_holds(request, principal, role)
        state[_ROLE_KEY] = role
    return principal


async def _still_holds(request: Request, principal: Principal, role: str) -> None:
    """403 unless the caller has ``role`` now: in the token, and in the store.

    An access token lives 900 s. Suspending an operator, or taking the role
    away, must stop them at once, not when the token expires: otherwise a
    suspended operator could reactivate themselves with the token they hold.
    """
    if principal.role != role:
        raise Problem(403, "forbidden", "This route needs a different role.")
    services: Services = request.app.state.services
    assert services.auth is not None  # a principal exists only when auth does
    user = await services.auth.users.get_user(principal.user_id)
    if user is None or user.status != "active" or user.role != role:
        raise Problem(403, "forbidden", "This account may not use this route now.")


def admin_only(endpoint: Endpoint) -> Endpoint:
    """Wrap a Starlette endpoint so only ``role=admin`` callers reach it."""

    @wraps(endpoint)
    async def guarded(request: Request) -> Response:
        await require_user(request, role="admin")
        return await endpoint(request)

    return guarded


def authenticated(endpoint: Endpoint) -> Endpoint:
    """Wrap a Starlette endpoint so only authenticated callers reach it."""

    @wraps(endpoint)
    async def guarded(request: Request) -> Response:
        await require_user(request)
        return await endpoint(request)

    return guarded
