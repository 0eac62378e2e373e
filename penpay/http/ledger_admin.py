"""Operator routes over the ledger: balances, transfers, trial balance, reconciliation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from penpay.actors.ledger import Ledger
from penpay.http.auth.guards import admin_only
from penpay.http.params import ascii_int
from penpay.http.problems import FieldError, Problem
from penpay.http.responses import json_response
from penpay.http.services import Services

#: account code -> the provider's own live balance in cents (None: not known now).
ProviderBalances = Callable[[], Awaitable[dict[str, int | None]]]

#: Which ledger account mirrors which provider balance.
FLOATS = ("deriv_float", "mpesa_float")

#: The largest transfers cursor parsed: beyond it no row exists, and the store's BIGINT overflows.
CURSOR_MAX = 2**62


def _ledger(request: Request) -> Ledger:
    services: Services = request.app.state.services
    if services.ledger is None:
        raise Problem(503, "service_unavailable", "The ledger is not configured.")
    return services.ledger


def _balance_json(code: str, balance: Any) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(balance)
    data["account"] = code
    data["balance_cents"] = balance.debits_posted - balance.credits_posted
    return data


@admin_only
async def list_accounts(request: Request) -> Response:
    ledger = _ledger(request)
    balances = await ledger.balances()
    chart = ledger.chart
    return json_response({
        "items": [
            {**_balance_json(code, b), "currency": chart[code].currency.value,
             "name": chart[code].name}
            for code, b in sorted(balances.items())
        ]
    })


@admin_only
async def get_account(request: Request) -> Response:
    ledger = _ledger(request)
    code = request.path_params["code"]
    if code not in ledger.chart:
        raise Problem(404, "not_found", f"no account {code!r}")
    return json_response(_balance_json(code, await ledger.balance(code)))


@admin_only
async def list_transfers(request: Request) -> Response:
    ledger = _ledger(request)
    account = request.query_params.get("account")
    if not account or account not in ledger.chart:
        raise Problem(
            422, "validation_failed", "account must be an account code",
            errors=[FieldError("account", f"got {account!r}")],
        )
    raw_cursor = request.query_params.get("cursor", "0")
    cursor = ascii_int(raw_cursor, 0, CURSOR_MAX)
    if cursor is None:
        raise Problem(422, "validation_failed", "bad cursor",
                      errors=[FieldError("cursor", "use next_cursor from a previous page")])
    page = await ledger.account_transfers(account, after_cursor=cursor, limit=100)
    return json_response({
        "items": page.transfers,
        "next_cursor": str(page.next_cursor) if page.next_cursor is not None else None,
    })


@admin_only
async def trial_balance(request: Request) -> Response:
    lines = await _ledger(request).trial_balance()
    return json_response({
        "currencies": {
            currency.value: {**msgspec.to_builtins(line), "balanced": line.balanced}
            for currency, line in lines.items()
        },
        "balanced": all(line.balanced for line in lines.values()),
    })


@admin_only
async def reconciliation(request: Request) -> Response:
    services: Services = request.app.state.services
    ledger = _ledger(request)
    report = await ledger.reconcile()
    providers = await services.provider_balances() if services.provider_balances else {}
    floats = []
    for code in FLOATS:
        balance = await ledger.balance(code)
        ours = balance.debits_posted - balance.credits_posted
        theirs = providers.get(code)
        floats.append({
            "account": code,
            "ledger_cents": ours,
            "provider_cents": theirs,
            "drift_cents": None if theirs is None else theirs - ours,
        })
    return json_response({
        "floats": floats,
        "ledger_internal": {
            "clean": report.clean,
            "transfers_scanned": report.transfers_scanned,
            "drift": report.drift,
            "held_groups": report.held_groups,
        },
    })


def routes(prefix: str = "/api/v1") -> list[Route]:
    base = f"{prefix}/admin"
    return [
        Route(f"{base}/ledger/accounts", list_accounts, methods=["GET"]),
        Route(f"{base}/ledger/accounts/{{code}}", get_account, methods=["GET"]),
        Route(f"{base}/ledger/transfers", list_transfers, methods=["GET"]),
        Route(f"{base}/ledger/trial-balance", trial_balance, methods=["GET"]),
        Route(f"{base}/reconciliation", reconciliation, methods=["GET"]),
    ]
