"""Quotes, deposits, withdrawals, transactions and the Deriv account link.

Each route authenticates, decodes its body, applies its rate limits and hands
the request to :class:`~penpay.actors.payments.Payments`, which holds the
business rules; a :class:`PaymentRefused` becomes problem+json.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from penpay.actors.fx import TransactionType, format_rate
from penpay.actors.payments import PaymentRefused, Payments
from penpay.actors.views import rfc3339
from penpay.http.auth.body import read_json
from penpay.http.auth.guards import admin_only, require_user
from penpay.http.idempotency import idempotent
from penpay.http.params import ascii_int, canonical_uuid, note_problem
from penpay.http.problems import FieldError, Problem
from penpay.http.ratelimit import STK_PER_PHONE, WITHDRAWAL_CODES_PER_USER, WRITES_PER_USER, enforce
from penpay.http.responses import json_response
from penpay.http.services import Services
from penpay.money import Currency
from penpay.storage.identity import User

LIST_LIMIT_MAX = 100
#: The largest ``amount_cents`` a quote parses (12 digits); the limits refuse far less.
QUOTE_AMOUNT_CENTS_MAX = 10**12 - 1


class DepositBody(msgspec.Struct, forbid_unknown_fields=True):
    amount_cents: int
    currency: Currency
    phone_number: str | None = None


class WithdrawalBody(msgspec.Struct, forbid_unknown_fields=True):
    amount_cents: int
    currency: Currency
    verification_code: str
    phone_number: str | None = None


class DerivLinkBody(msgspec.Struct, forbid_unknown_fields=True):
    deriv_login_id: str
    token: str


def _payments(request: Request) -> Payments:
    services: Services = request.app.state.services
    if services.payments is None:
        raise Problem(503, "service_unavailable", "Payments are not configured.")
    return services.payments


async def _user(request: Request) -> User:
    principal = await require_user(request)
    services: Services = request.app.state.services
    assert services.auth is not None  # require_user refuses when auth is missing
    user = await services.auth.users.get_user(principal.user_id)
    if user is None:
        raise Problem(401, "unauthorized", "The account no longer exists.")
    return user


def _refused(exc: PaymentRefused) -> Problem:
    errors = [FieldError(exc.field, exc.detail)] if exc.field else None
    return Problem(exc.status, exc.code, exc.detail, errors=errors)


def _positive(value: int, field: str) -> None:
    if value <= 0:
        raise Problem(
            422, "validation_failed", "The body is not valid.",
            errors=[FieldError(field, "must be a positive integer")],
        )


async def quote(request: Request) -> Response:
    await require_user(request)
    params = request.query_params
    errors: list[FieldError] = []
    type_raw, amount_raw, currency_raw = (
        params.get("type", ""), params.get("amount_cents", ""), params.get("currency", "USD")
    )
    if type_raw not in ("deposit", "withdrawal"):
        errors.append(FieldError("type", "deposit or withdrawal"))
    amount = ascii_int(amount_raw, 1, QUOTE_AMOUNT_CENTS_MAX)
    if amount is None:
        errors.append(FieldError("amount_cents", "a positive integer"))
    if currency_raw not in ("USD", "KES"):
        errors.append(FieldError("currency", "USD or KES"))
    if errors or amount is None:
        raise Problem(422, "validation_failed", "The query is not valid.", errors=errors)
    try:
        q = _payments(request).quote(TransactionType(type_raw), amount, Currency(currency_raw))
    except PaymentRefused as exc:
        raise _refused(exc) from None
    return json_response(
        {
            "type": q.type.value,
            "usd_cents": q.usd_cents,
            "kes_cents": q.kes_cents,
            "kes_per_usd": format_rate(q.rate_kes_cents_per_usd),
            "mid_rate": format_rate(q.mid_kes_cents_per_usd),
            "expires_at": rfc3339(q.expires_at_ms),
        }
    )


def _accepted(view: dict[str, Any]) -> Response:
    location = f"/api/v1/transactions/{view['transaction_id']}"
    return json_response(view, status_code=202, headers={"Location": location})


@idempotent
async def create_deposit(request: Request) -> Response:
    user = await _user(request)
    body = await read_json(request, DepositBody)
    _positive(body.amount_cents, "amount_cents")
    await enforce(request, WRITES_PER_USER, str(user.id))
    payments = _payments(request)
    services: Services = request.app.state.services
    assert services.auth is not None
    phone = body.phone_number or services.auth.phone_of(user)
    if phone:  # the prompt lands on a phone: limit per phone, by its blind index
        await enforce(request, STK_PER_PHONE, _phone_subject(services, phone))
    try:
        view = await payments.start_deposit(
            user, request.headers["idempotency-key"], body.amount_cents, body.currency,
            body.phone_number,
        )
    except PaymentRefused as exc:
        raise _refused(exc) from None
    return _accepted(view)


def _phone_subject(services: Services, phone: str) -> str:
    from penpay.actors.daraja import InvalidPhoneNumber, normalize_msisdn

    assert services.auth is not None
    try:
        digits = normalize_msisdn(phone)
    except InvalidPhoneNumber:
        return "invalid"
    return services.auth.phone_index("+" + digits).hex()


@idempotent
async def create_withdrawal(request: Request) -> Response:
    user = await _user(request)
    body = await read_json(request, WithdrawalBody)
    _positive(body.amount_cents, "amount_cents")
    await enforce(request, WRITES_PER_USER, str(user.id))
    try:
        view = await _payments(request).start_withdrawal(
            user, request.headers["idempotency-key"], body.amount_cents, body.currency,
            body.verification_code, body.phone_number,
        )
    except PaymentRefused as exc:
        raise _refused(exc) from None
    return _accepted(view)


async def withdrawal_code(request: Request) -> Response:
    user = await _user(request)
    await enforce(request, WITHDRAWAL_CODES_PER_USER, str(user.id))
    try:
        await _payments(request).request_withdrawal_code(user)
    except PaymentRefused as exc:
        raise _refused(exc) from None
    return json_response({"status": "code_sent"}, status_code=202)


async def link_deriv_account(request: Request) -> Response:
    user = await _user(request)
    body = await read_json(request, DerivLinkBody)
    try:
        linked = await _payments(request).link_deriv(user, body.deriv_login_id, body.token)
    except PaymentRefused as exc:
        raise _refused(exc) from None
    return json_response(linked)


def _transaction_id(request: Request) -> str:
    """The path's transaction id as actors key it; malformed: 404, as an unknown id is."""
    transaction_id = canonical_uuid(request.path_params["id"])
    if transaction_id is None:
        raise Problem(404, "not_found", "No such transaction.")
    return transaction_id


async def get_transaction(request: Request) -> Response:
    user = await _user(request)
    view = await _payments(request).view(_transaction_id(request), user.id)
    if view is None:
        raise Problem(404, "not_found", "No such transaction.")
    return json_response(view)


def _cursor(raw: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not raw:
        return None
    try:
        stamp, _, ident = base64.urlsafe_b64decode(raw.encode()).decode().partition("|")
        created_at, key = datetime.fromisoformat(stamp), canonical_uuid(ident)
        if created_at.tzinfo is None or key is None:  # ours are aware; naive ones don't compare
            raise ValueError(raw)
        return created_at, uuid.UUID(key)
    except (ValueError, UnicodeDecodeError):
        raise Problem(
            422, "validation_failed", "The cursor is not valid.",
            errors=[FieldError("cursor", "use next_cursor from a previous page")],
        ) from None


def _next_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{ident}".encode()).decode()


async def _page(request: Request, user_id: uuid.UUID | None) -> Response:
    params = request.query_params
    limit_raw = params.get("limit", "20")
    limit = ascii_int(limit_raw, 1, LIST_LIMIT_MAX)
    if limit is None:
        raise Problem(
            422, "validation_failed", "limit must be an integer from 1 to 100",
            errors=[FieldError("limit", f"got {limit_raw!r}")],
        )
    type_filter = params.get("type")
    if type_filter not in (None, "deposit", "withdrawal"):
        raise Problem(422, "validation_failed", "type must be deposit or withdrawal",
                      errors=[FieldError("type", f"got {type_filter!r}")])
    rows = await _payments(request).index.page(
        user_id=user_id, type=type_filter, status=params.get("status"),
        limit=limit + 1, before=_cursor(params.get("cursor")),
    )
    visible = [r for r in rows if r.view][:limit]
    more = len(rows) > limit
    next_cursor = _next_cursor(visible[-1].created_at, visible[-1].id) if more and visible else None
    return json_response({"items": [r.view for r in visible], "next_cursor": next_cursor})


async def list_transactions(request: Request) -> Response:
    user = await _user(request)
    return await _page(request, user.id)


@admin_only
async def admin_transactions(request: Request) -> Response:
    return await _page(request, None)


class ResolveBody(msgspec.Struct, forbid_unknown_fields=True):
    action: str
    note: str


@admin_only
async def admin_resolve(request: Request) -> Response:
    principal = await require_user(request, role="admin")
    transaction_id = _transaction_id(request)
    body = await read_json(request, ResolveBody)
    if body.action not in ("complete", "reverse", "fail"):
        raise Problem(422, "validation_failed", "action must be complete, reverse or fail",
                      errors=[FieldError("action", f"got {body.action!r}")])
    if (why := note_problem(body.note)) is not None:
        raise Problem(422, "validation_failed", "the note cannot be stored",
                      errors=[FieldError("note", f"explain the decision: {why}")])
    services: Services = request.app.state.services
    payments = _payments(request)
    try:
        view = await payments.resolve(
            transaction_id, body.action, body.note, str(principal.user_id)
        )
    except PaymentRefused as exc:
        raise _refused(exc) from None
    if services.audit is not None:
        await services.audit.append(
            str(principal.user_id), "transaction.resolve", transaction_id,
            {"action": body.action, "note": body.note},
        )
    return json_response(view)


def routes(prefix: str = "/api/v1") -> list[Route]:
    return [
        Route(f"{prefix}/quotes", quote, methods=["GET"]),
        Route(f"{prefix}/deposits", create_deposit, methods=["POST"]),
        Route(f"{prefix}/withdrawals/verification-code", withdrawal_code, methods=["POST"]),
        Route(f"{prefix}/withdrawals", create_withdrawal, methods=["POST"]),
        Route(f"{prefix}/transactions", list_transactions, methods=["GET"]),
        Route(f"{prefix}/transactions/{{id}}", get_transaction, methods=["GET"]),
        Route(f"{prefix}/me/deriv-account", link_deriv_account, methods=["PUT"]),
        Route(f"{prefix}/admin/transactions", admin_transactions, methods=["GET"]),
        Route(f"{prefix}/admin/transactions/{{id}}/resolve", admin_resolve, methods=["POST"]),
    ]
