"""``GET /openapi.json``: OpenAPI 3.1 for every route, from the code's own types.

Request bodies are described by the msgspec Structs the routes decode, so
the schema cannot drift from what is accepted; a test checks that the
document and the app's routes list exactly the same operations.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from penpay.http.auth.admin import StatusBody
from penpay.http.auth.routes import LoginBody, LogoutBody, RefreshBody, RegisterBody
from penpay.http.ledger_admin import CapitalBody
from penpay.http.payments import DepositBody, DerivLinkBody, ResolveBody, WithdrawalBody
from penpay.http.responses import json_response

API = "/api/v1"

class Op(msgspec.Struct, frozen=True):
    summary: str
    body: type[msgspec.Struct] | None = None
    status: int = 200
    errors: tuple[str, ...] = ()
    auth: str = "user"  # none | user | admin


#: What a request to move money can be refused with.
MONEY_ERRORS = (
    "amount_below_minimum",
    "amount_above_maximum",
    "daily_limit_exceeded",
    "deriv_account_not_linked",
    "account_inactive",
    "temporarily_unavailable",
    "idempotency_key_missing",
    "idempotency_key_reused",
    "idempotency_request_in_progress",
)

#: What a Daraja callback can be refused with: a token that does not verify,
#: a source outside the allow-list.
CALLBACK_ERRORS = ("not_found", "forbidden")

#: Every operation the app serves; a test keeps this and the routes identical.
OPERATIONS: dict[tuple[str, str], Op] = {
    ("GET", "/healthz"): Op("Liveness", auth="none"),
    ("GET", "/readyz"): Op(
        "Readiness of database, Redis, Deriv and Daraja",
        errors=("service_unavailable",),
        auth="none",
    ),
    ("GET", "/metrics"): Op("Prometheus metrics", auth="none"),
    ("GET", "/openapi.json"): Op("This document", auth="none"),
    ("POST", f"{API}/auth/register"): Op(
        "Register",
        body=RegisterBody,
        status=201,
        errors=("email_taken", "validation_failed",),
        auth="none",
    ),
    ("POST", f"{API}/auth/login"): Op(
        "Log in",
        body=LoginBody,
        errors=("invalid_credentials", "device_limit_reached", "rate_limited",),
        auth="none",
    ),
    ("POST", f"{API}/auth/refresh"): Op(
        "Rotate the refresh token",
        body=RefreshBody,
        errors=("invalid_token",),
        auth="none",
    ),
    ("POST", f"{API}/auth/logout"): Op("Log out", body=LogoutBody, status=204, auth="none"),
    ("GET", f"{API}/auth/jwks.json"): Op("Public signing keys", auth="none"),
    ("GET", f"{API}/me"): Op("The caller's profile and limits"),
    ("PUT", f"{API}/me/deriv-account"): Op(
        "Link a Deriv account",
        body=DerivLinkBody,
        errors=(
            "deriv_token_invalid",
            "deriv_account_mismatch",
            "deriv_account_not_usd",
            "deriv_account_virtual",
        ),
    ),
    ("GET", f"{API}/quotes"): Op("A locked FX quote", errors=("validation_failed",)),
    ("POST", f"{API}/deposits"): Op(
        "Deposit by M-Pesa STK Push",
        body=DepositBody,
        status=202,
        errors=MONEY_ERRORS,
    ),
    ("POST", f"{API}/withdrawals/verification-code"): Op(
        "E-mail a Deriv withdrawal code",
        status=202,
        errors=("rate_limited",),
    ),
    ("POST", f"{API}/withdrawals"): Op(
        "Withdraw to M-Pesa",
        body=WithdrawalBody,
        status=202,
        errors=("verification_code_invalid", *MONEY_ERRORS),
    ),
    ("GET", f"{API}/transactions"): Op("The caller's transactions", errors=("validation_failed",)),
    ("GET", f"{API}/transactions/{{id}}"): Op(
        "One of the caller's transactions",
        errors=("not_found",),
    ),
    # The callback URLs PenPay hands Daraja: neutral and lowercase, since
    # Daraja refuses "mpesa" or "query" in one (protocols.md 1.11).
    ("POST", f"{API}/callbacks/stk/{{token}}"): Op(
        "Daraja STK callback",
        errors=CALLBACK_ERRORS,
        auth="none",
    ),
    ("POST", f"{API}/callbacks/b2c/result/{{token}}"): Op(
        "Daraja B2C result",
        errors=CALLBACK_ERRORS,
        auth="none",
    ),
    ("POST", f"{API}/callbacks/b2c/timeout/{{token}}"): Op(
        "Daraja B2C queue time-out",
        errors=CALLBACK_ERRORS,
        auth="none",
    ),
    ("POST", f"{API}/callbacks/b2c/status/result/{{token}}"): Op(
        "Daraja Transaction Status result",
        errors=CALLBACK_ERRORS,
        auth="none",
    ),
    ("POST", f"{API}/callbacks/b2c/status/timeout/{{token}}"): Op(
        "Daraja Transaction Status queue time-out",
        errors=CALLBACK_ERRORS,
        auth="none",
    ),
    # API.md's routes, still served for callback URLs handed out before.
    ("POST", f"{API}/callbacks/mpesa/stk/{{token}}"): Op(
        "Daraja STK callback (older URL)",
        errors=CALLBACK_ERRORS,
        auth="none",
    ),
    ("POST", f"{API}/callbacks/mpesa/b2c/result/{{token}}"): Op(
        "Daraja B2C / status result (older URL; ?query=status marks a status answer)",
        errors=CALLBACK_ERRORS,
        auth="none",
    ),
    ("POST", f"{API}/callbacks/mpesa/b2c/timeout/{{token}}"): Op(
        "Daraja queue time-out (older URL; ?query=status marks a status query's)",
        errors=CALLBACK_ERRORS,
        auth="none",
    ),
    ("GET", f"{API}/admin/actors"): Op(
        "Live and parked actors",
        errors=("validation_failed",),
        auth="admin",
    ),
    ("GET", f"{API}/admin/actors/{{kind}}/{{key}}"): Op(
        "One actor's state",
        errors=("not_found",),
        auth="admin",
    ),
    ("GET", f"{API}/admin/transactions"): Op("Transactions, e.g. in NEEDS_REVIEW", auth="admin"),
    ("GET", f"{API}/admin/transactions/{{id}}/callbacks"): Op(
        "The Daraja callbacks of one transaction, verbatim, in arrival order",
        errors=("not_found",),
        auth="admin",
    ),
    ("POST", f"{API}/admin/transactions/{{id}}/resolve"): Op(
        "Resolve a NEEDS_REVIEW transaction",
        body=ResolveBody,
        errors=("resolve_refused", "not_found",),
        auth="admin",
    ),
    ("GET", f"{API}/admin/ledger/accounts"): Op("Ledger balances", auth="admin"),
    ("GET", f"{API}/admin/ledger/accounts/{{code}}"): Op(
        "One account's balance",
        errors=("not_found",),
        auth="admin",
    ),
    ("GET", f"{API}/admin/ledger/transfers"): Op(
        "An account's transfers",
        errors=("validation_failed",),
        auth="admin",
    ),
    ("GET", f"{API}/admin/ledger/trial-balance"): Op("Trial balance per currency", auth="admin"),
    ("POST", f"{API}/admin/ledger/capital"): Op(
        "Book owner capital into a float",
        body=CapitalBody,
        status=201,
        errors=(
            "validation_failed", "ledger_refused", "temporarily_unavailable",
            "idempotency_key_missing", "idempotency_key_reused",
            "idempotency_request_in_progress",
        ),
        auth="admin",
    ),
    ("GET", f"{API}/admin/reconciliation"): Op(
        "Ledger floats vs the providers' balances",
        auth="admin",
    ),
    ("GET", f"{API}/admin/audit"): Op("The hash-chained audit log", auth="admin"),
    ("GET", f"{API}/admin/audit/verify"): Op("Verify the audit chain", auth="admin"),
    ("PUT", f"{API}/admin/users/{{id}}/status"): Op(
        "Set a user's status",
        body=StatusBody,
        errors=("not_found",),
        auth="admin",
    ),
}

_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code", "errors"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"},
        "status": {"type": "integer"}, "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["field", "message"],
            "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
    },
}


def operations() -> set[tuple[str, str]]:
    return set(OPERATIONS)


def document() -> dict[str, Any]:
    bodies = sorted({op.body for op in OPERATIONS.values() if op.body}, key=lambda t: t.__name__)
    schemas, components = msgspec.json.schema_components(
        bodies, ref_template="#/components/schemas/{name}"
    )
    problem = {"content": {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/Problem"}}}}
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in sorted(OPERATIONS.items()):
        responses: dict[str, Any] = {
            str(op.status): {"description": "No content" if op.status == 204 else "Success"},
            "default": {
                "description": f"Problem: {', '.join(op.errors) or 'internal_error'}",
                **problem,
            },
        }
        operation: dict[str, Any] = {"summary": op.summary, "responses": responses}
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", path)
        ]
        if op.body is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": schemas[bodies.index(op.body)]}}}
        if op.auth != "none":
            operation["security"] = [{"bearer": []}]
        if "idempotency_key_missing" in op.errors:
            parameters.append({
                "name": "Idempotency-Key", "in": "header", "required": True,
                "schema": {"type": "string", "minLength": 8, "maxLength": 255}})
        if parameters:
            operation["parameters"] = parameters
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "PenPay", "version": "1", "description": "M-Pesa <-> Deriv payments"},
        "paths": paths,
        "components": {
            "schemas": {**components, "Problem": _PROBLEM},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


async def openapi_route(request: Request) -> Response:
    return json_response(document())
