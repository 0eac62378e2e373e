"""Operator routes over the ledger: balances, transfers, trial balance, reconciliation,
and owner capital paid into a float."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from penpay.actors.ledger import Ledger
from penpay.actors.ledger_port import fund
from penpay.actors.saga import Account
from penpay.actors.transaction import LedgerRefused
from penpay.engine import EngineError
from penpay.http.auth.body import read_json
from penpay.http.auth.guards import admin_only, require_user
from penpay.http.idempotency import idempotent
from penpay.http.params import ascii_int, note_problem
from penpay.http.problems import FieldError, Problem
from penpay.http.responses import json_response
from penpay.http.services import Services

#: account code -> the provider's own live balance in cents (None: not known now).
ProviderBalances = Callable[[], Awaitable[dict[str, int | None]]]

#: Which ledger account mirrors which provider balance.
FLOATS = ("deriv_float", "mpesa_float")

#: Each float, and the owner's equity account its capital comes from.
CAPITAL_SOURCES = {
    "deriv_float": Account.OWNER_EQUITY_USD,
    "mpesa_float": Account.OWNER_EQUITY_KES,
}
#: The most one capital payment may book, in minor units (ten billion of the currency).
CAPITAL_CENTS_MAX = 10**12

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


class CapitalBody(msgspec.Struct, forbid_unknown_fields=True):
    """Owner capital paid into a float (the money is already at the provider)."""

    account: str
    amount_cents: int
    note: str


def _checked(body: CapitalBody) -> None:
    errors = []
    if body.account not in CAPITAL_SOURCES:
        errors.append(FieldError("account", f"one of {', '.join(CAPITAL_SOURCES)}"))
    if not 0 < body.amount_cents <= CAPITAL_CENTS_MAX:
        errors.append(FieldError("amount_cents", f"from 1 to {CAPITAL_CENTS_MAX}"))
    if (why := note_problem(body.note)) is not None:
        errors.append(FieldError("note", why))
    if errors:
        raise Problem(422, "validation_failed", "The body is not valid.", errors=errors)


@admin_only
@idempotent
async def add_capital(request: Request) -> Response:
    """Book owner capital into a float, e.g. to match a real provider balance at go-live.

    The posting's name comes from the operator and the Idempotency-Key, so the
    same request can never book twice, even after the key store forgot the key.
    """
    principal = await require_user(request, role="admin")
    body = await read_json(request, CapitalBody)
    _checked(body)
    ledger = _ledger(request)
    key = request.headers["idempotency-key"]
    name = "capital_" + hashlib.sha256(f"{principal.user_id}\n{key}".encode()).hexdigest()[:32]
    spec = ledger.chart[body.account]
    try:
        transfer_id = await fund(
            ledger, name=name, float_account=Account(body.account),
            equity=CAPITAL_SOURCES[body.account], amount_cents=body.amount_cents,
            currency=spec.currency,
        )
    except LedgerRefused as exc:
        raise Problem(409, "ledger_refused", str(exc)) from None
    except EngineError:
        raise Problem(503, "temporarily_unavailable", "The ledger did not answer.") from None
    services: Services = request.app.state.services
    if services.audit is not None:
        await services.audit.append(
            str(principal.user_id), "ledger.capital", body.account,
            {"amount_cents": body.amount_cents, "currency": spec.currency.value,
             "note": body.note, "transfer_id": transfer_id},
        )
    balance = await ledger.balance(body.account)
    return json_response({
        "account": body.account,
        "amount_cents": body.amount_cents,
        "currency": spec.currency.value,
        "transfer_id": transfer_id,
        "balance_cents": balance.debits_posted - balance.credits_posted,
    }, status_code=201)


def routes(prefix: str = "/api/v1") -> list[Route]:
    base = f"{prefix}/admin"
    return [
        Route(f"{base}/ledger/accounts", list_accounts, methods=["GET"]),
        Route(f"{base}/ledger/accounts/{{code}}", get_account, methods=["GET"]),
        Route(f"{base}/ledger/transfers", list_transfers, methods=["GET"]),
        Route(f"{base}/ledger/trial-balance", trial_balance, methods=["GET"]),
        Route(f"{base}/ledger/capital", add_capital, methods=["POST"]),
        Route(f"{base}/reconciliation", reconciliation, methods=["GET"]),
    ]
