"""Identity routes (API.md "Identity"): register, login, refresh, logout, JWKS, /me."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from penpay.http.auth.body import read_json
from penpay.http.auth.guards import require_user
from penpay.http.auth.phone import InvalidPhoneNumber, normalize_kenyan_msisdn
from penpay.http.auth.service import AuthError, AuthService
from penpay.http.auth.validation import email_problem, password_problem
from penpay.http.problems import FieldError, Problem
from penpay.http.ratelimit import (
    LOGIN_PER_IP,
    REFRESH_PER_IP,
    REGISTER_PER_IP,
    client_ip,
    enforce,
)
from penpay.http.responses import json_response
from penpay.storage.identity import EmailTaken, User

if TYPE_CHECKING:
    from penpay.http.services import Services

DEVICE_ID_LENGTH_MAX = 128
#: Token responses must never be cached (RFC 6749 §5.1), though the request has no Bearer.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

#: ``Services.limits_for``: the user's deposit/withdrawal limits for ``/me``.
LimitsProvider = Callable[[User], Awaitable[dict[str, Any]]]


async def default_limits(user: User) -> dict[str, Any]:
    """API.md's default limits with nothing used today; the payments side replaces this."""
    return {
        "deposit": {"min_cents": 200, "max_cents": 100_000, "daily_cents": 200_000,
                    "used_today_cents": 0},
        "withdrawal": {"min_cents": 500, "max_cents": 100_000, "daily_cents": 200_000,
                       "used_today_cents": 0},
    }  # fmt: skip


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    phone_number: str
    password: str


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str
    device_id: str | None = None


class RefreshBody(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: str
    device_id: str | None = None


class LogoutBody(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: str
    all_devices: bool = False


def _auth(request: Request) -> AuthService:
    services: Services = request.app.state.services
    if services.auth is None:
        raise Problem(503, "service_unavailable", "Identity is not configured.")
    return services.auth


def _problem(exc: AuthError) -> Problem:
    return Problem(exc.status, exc.code, str(exc))


def _check_device(device_id: str | None) -> None:
    if device_id is not None and not 1 <= len(device_id) <= DEVICE_ID_LENGTH_MAX:
        raise Problem(
            422, "validation_failed", "The body is not valid.",
            errors=[FieldError("device_id", f"must be 1 to {DEVICE_ID_LENGTH_MAX} characters")],
        )  # fmt: skip


async def register(request: Request) -> Response:
    auth = _auth(request)
    await enforce(request, REGISTER_PER_IP, client_ip(request.scope))
    body = await read_json(request, RegisterBody)
    errors: list[FieldError] = []
    email = body.email.strip()
    if (problem := email_problem(email)) is not None:
        errors.append(FieldError("email", problem))
    try:
        phone = normalize_kenyan_msisdn(body.phone_number)
    except InvalidPhoneNumber as exc:
        errors.append(FieldError("phone_number", str(exc)))
    if (problem := password_problem(body.password)) is not None:
        errors.append(FieldError("password", problem))
    if errors:
        raise Problem(422, "validation_failed", "The body is not valid.", errors=errors)
    try:
        user = await auth.register(email=email, phone_e164=phone, password=body.password)
    except EmailTaken:
        raise Problem(409, "email_taken", "An account with this e-mail already exists.") from None
    return json_response({"user_id": str(user.id), "status": user.status}, status_code=201)


async def login(request: Request) -> Response:
    auth = _auth(request)
    await enforce(request, LOGIN_PER_IP, client_ip(request.scope))
    body = await read_json(request, LoginBody)
    _check_device(body.device_id)
    try:
        pair = await auth.login(
            email=body.email.strip(), password=body.password, device_id=body.device_id
        )
    except AuthError as exc:
        raise _problem(exc) from None
    return json_response(pair, headers=_NO_STORE)


async def refresh(request: Request) -> Response:
    auth = _auth(request)
    await enforce(request, REFRESH_PER_IP, client_ip(request.scope))
    body = await read_json(request, RefreshBody)
    _check_device(body.device_id)
    try:
        pair = await auth.refresh(body.refresh_token, device_id=body.device_id)
    except AuthError as exc:
        raise _problem(exc) from None
    return json_response(pair, headers=_NO_STORE)


async def logout(request: Request) -> Response:
    auth = _auth(request)
    body = await read_json(request, LogoutBody)
    await auth.logout(body.refresh_token, all_devices=body.all_devices)
    return Response(status_code=204)


async def jwks(request: Request) -> Response:
    auth = _auth(request)
    return json_response(
        auth.tokens.keyset.jwks(), headers={"Cache-Control": "public, max-age=300"}
    )


async def me(request: Request) -> Response:
    principal = await require_user(request)
    auth = _auth(request)
    services: Services = request.app.state.services
    user = await auth.users.get_user(principal.user_id)
    if user is None:
        raise Problem(401, "unauthorized", "The account no longer exists.")
    return json_response(
        {
            "user_id": str(user.id),
            "email": user.email,
            "phone_number": auth.phone_of(user),
            "status": user.status,
            "kyc_tier": user.kyc_tier,
            "role": user.role,
            "deriv": {
                "login_id": user.deriv_login_id,
                "linked": user.deriv_login_id is not None,
                "currency": user.deriv_currency,
                "full_name": user.deriv_full_name,
            },
            "limits": await services.limits_for(user),
        }
    )
