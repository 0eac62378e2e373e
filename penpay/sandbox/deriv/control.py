"""The Deriv sandbox's control API over HTTP: the Python control API as JSON routes.

A demo or a test that drives PenPay over real sockets scripts the fake Deriv
here (create accounts and tokens, read balances, statements and the mailbox,
arm faults, set the rate limit). Every route is listed in doc/sandbox-deriv.md.
Money is integer cents in both directions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from penpay.sandbox.deriv.state import (
    Account,
    ClientWithdrawalCaps,
    DerivWorld,
    Fault,
    FaultKind,
    PaymentAgentTerms,
)

PREFIX = "/__sandbox__/deriv"
Handler = Callable[[Request], Awaitable[JSONResponse]]


class _BadRequest(Exception):
    pass


def _account_json(account: Account) -> dict[str, Any]:
    return {
        "loginid": account.loginid,
        "email": account.email,
        "fullname": account.fullname,
        "currency": account.currency,
        "balance_cents": account.balance_cents,
        "is_virtual": account.is_virtual,
        "country": account.country,
        "payment_agent": dataclasses.asdict(account.payment_agent)
        if account.payment_agent
        else None,
        "withdrawal_caps": dataclasses.asdict(account.withdrawal_caps),
    }


def _fault_json(fault: Fault) -> dict[str, Any]:
    data = dataclasses.asdict(fault)
    data["kind"] = fault.kind.value
    return data


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise _BadRequest("body must be JSON") from None
    if not isinstance(data, dict):
        raise _BadRequest("body must be a JSON object")
    return data


def _int(data: dict[str, Any], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadRequest(f"{key} must be an integer")
    return value


def control_app(world: DerivWorld) -> Starlette:
    """A Starlette app exposing ``world``'s control API under ``/__sandbox__/deriv``."""

    def guarded(handler: Handler) -> Handler:
        async def wrapper(request: Request) -> JSONResponse:
            try:
                return await handler(request)
            except _BadRequest as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            except KeyError as exc:
                return JSONResponse({"error": str(exc.args[0])}, status_code=404)

        return wrapper

    async def list_accounts(request: Request) -> JSONResponse:
        return JSONResponse([_account_json(a) for a in world.accounts.values()])

    async def create_account(request: Request) -> JSONResponse:
        data = await _body(request)
        pa = data.get("payment_agent")
        terms: PaymentAgentTerms | bool | None
        terms = PaymentAgentTerms(**pa) if isinstance(pa, dict) else bool(pa)
        caps = data.get("withdrawal_caps")
        tokens = data.get("tokens") or {}
        if not isinstance(tokens, dict):
            raise _BadRequest("tokens must map token -> [scopes]")
        account = world.create_account(
            str(data["loginid"]),
            email=str(data["email"]),
            fullname=str(data["fullname"]),
            currency=str(data.get("currency", "USD")),
            balance_cents=_int(data, "balance_cents", 0),
            is_virtual=bool(data.get("is_virtual", False)),
            country=str(data.get("country", "ke")),
            payment_agent=terms or None,
            withdrawal_caps=ClientWithdrawalCaps(**caps) if isinstance(caps, dict) else None,
            tokens={str(t): [str(s) for s in scopes] for t, scopes in tokens.items()},
        )
        return JSONResponse(_account_json(account), status_code=201)

    async def get_account(request: Request) -> JSONResponse:
        return JSONResponse(_account_json(world.account(request.path_params["loginid"])))

    async def set_balance(request: Request) -> JSONResponse:
        loginid = request.path_params["loginid"]
        world.set_balance(loginid, _int(await _body(request), "balance_cents"))
        return JSONResponse(_account_json(world.account(loginid)))

    async def statement(request: Request) -> JSONResponse:
        rows = world.statement_of(request.path_params["loginid"])
        return JSONResponse([dataclasses.asdict(r) for r in rows])

    async def add_token(request: Request) -> JSONResponse:
        data = await _body(request)
        token = world.add_token(str(data["token"]), str(data["loginid"]), data.get("scopes", []))
        return JSONResponse(
            {"token": token.token, "loginid": token.loginid, "scopes": sorted(token.scopes)},
            status_code=201,
        )

    async def revoke_token(request: Request) -> JSONResponse:
        world.revoke_token(request.path_params["token"])
        return JSONResponse({"revoked": True})

    async def mailbox(request: Request) -> JSONResponse:
        mails = world.mailbox(request.query_params.get("email"))
        return JSONResponse(
            [
                {
                    "email": m.email,
                    "purpose": m.purpose,
                    "code": m.code,
                    "subject": m.subject,
                    "sent_at": m.sent_at.isoformat(),
                }
                for m in mails
            ]
        )

    async def expire_codes(request: Request) -> JSONResponse:
        return JSONResponse({"expired": world.expire_codes(request.query_params.get("email"))})

    async def moves(request: Request) -> JSONResponse:
        return JSONResponse([dataclasses.asdict(m) for m in world.moves])

    async def list_faults(request: Request) -> JSONResponse:
        return JSONResponse([_fault_json(f) for f in world.faults])

    async def add_fault(request: Request) -> JSONResponse:
        data = await _body(request)
        times = data.get("times", 1)
        fault = world.inject_fault(
            str(data["call"]),
            FaultKind(str(data["kind"])),
            times=None if times is None else _int(data, "times", 1),
            probability=float(data.get("probability", 1.0)),
            code=data.get("code"),
            message=data.get("message"),
            delay_s=float(data.get("delay_s", 0.0)),
        )
        return JSONResponse(_fault_json(fault), status_code=201)

    async def clear_faults(request: Request) -> JSONResponse:
        world.clear_faults(request.query_params.get("call"))
        return JSONResponse({"faults": len(world.faults)})

    async def rate_limit(request: Request) -> JSONResponse:
        data = await _body(request)
        per_minute = data.get("per_minute")
        world.set_rate_limit(None if per_minute is None else _int(data, "per_minute"))
        return JSONResponse({"per_minute": world.rate_limit_per_min})

    async def suspend(request: Request) -> JSONResponse:
        world.payments_suspended = bool((await _body(request)).get("suspended"))
        return JSONResponse({"suspended": world.payments_suspended})

    async def drop(request: Request) -> JSONResponse:
        return JSONResponse({"dropped": world.drop_connections()})

    routes = [
        Route(f"{PREFIX}/accounts", guarded(list_accounts), methods=["GET"]),
        Route(f"{PREFIX}/accounts", guarded(create_account), methods=["POST"]),
        Route(f"{PREFIX}/accounts/{{loginid}}", guarded(get_account), methods=["GET"]),
        Route(f"{PREFIX}/accounts/{{loginid}}/balance", guarded(set_balance), methods=["PUT"]),
        Route(f"{PREFIX}/accounts/{{loginid}}/statement", guarded(statement), methods=["GET"]),
        Route(f"{PREFIX}/tokens", guarded(add_token), methods=["POST"]),
        Route(f"{PREFIX}/tokens/{{token}}", guarded(revoke_token), methods=["DELETE"]),
        Route(f"{PREFIX}/mailbox", guarded(mailbox), methods=["GET"]),
        Route(f"{PREFIX}/codes/expire", guarded(expire_codes), methods=["POST"]),
        Route(f"{PREFIX}/moves", guarded(moves), methods=["GET"]),
        Route(f"{PREFIX}/faults", guarded(list_faults), methods=["GET"]),
        Route(f"{PREFIX}/faults", guarded(add_fault), methods=["POST"]),
        Route(f"{PREFIX}/faults", guarded(clear_faults), methods=["DELETE"]),
        Route(f"{PREFIX}/rate-limit", guarded(rate_limit), methods=["PUT"]),
        Route(f"{PREFIX}/payments-suspended", guarded(suspend), methods=["PUT"]),
        Route(f"{PREFIX}/connections/drop", guarded(drop), methods=["POST"]),
    ]
    return Starlette(routes=routes)


async def serve_control_api(
    world: DerivWorld,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve :func:`control_app` with hypercorn; ``nursery.start`` returns the base URL."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve, control_app(world), config)
        task_status.started(binds[0])
