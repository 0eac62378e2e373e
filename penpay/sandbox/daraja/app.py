"""The Starlette app: Daraja's routes plus the ``/__sandbox__/`` control API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from penpay.sandbox.daraja import api, control

if TYPE_CHECKING:
    from penpay.sandbox.daraja.sandbox import DarajaSandbox

Handler = Callable[["DarajaSandbox", Request], Awaitable[Response]]


def build_app(sb: DarajaSandbox) -> Starlette:
    """One app per sandbox; the handlers close over that sandbox's world."""

    def route(path: str, handler: Handler, methods: list[str]) -> Route:
        async def endpoint(request: Request) -> Response:
            return await handler(sb, request)

        return Route(path, endpoint, methods=methods)

    post = ["POST"]
    return Starlette(
        routes=[
            route("/oauth/v1/generate", api.oauth, ["GET"]),
            route("/mpesa/stkpush/v1/processrequest", api.stk_push, post),
            route("/mpesa/stkpushquery/v1/query", api.stk_query, post),
            route("/mpesa/b2c/v3/paymentrequest", partial(api.b2c, version=3), post),
            route("/mpesa/b2c/v1/paymentrequest", partial(api.b2c, version=1), post),
            route("/mpesa/transactionstatus/v1/query", api.transaction_status, post),
            route("/mpesa/accountbalance/v1/query", api.account_balance, post),
            route("/__sandbox__/customers", control.customers, ["GET"]),
            route("/__sandbox__/customers/{phone}", control.customer, ["GET", "PUT"]),
            route("/__sandbox__/faults", control.faults, ["GET", "POST", "DELETE"]),
            route("/__sandbox__/collections", control.collections, ["GET"]),
            route("/__sandbox__/payouts", control.payouts, ["GET"]),
            route("/__sandbox__/accounts", control.accounts, ["GET", "PUT"]),
            route("/__sandbox__/callbacks", control.callbacks, ["GET"]),
            route("/__sandbox__/requests", control.requests, ["GET"]),
            route("/__sandbox__/reset", control.reset, ["POST"]),
        ]
    )
