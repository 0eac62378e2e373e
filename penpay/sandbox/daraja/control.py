"""The ``/__sandbox__/`` control API: script the world and read what happened.

JSON in, JSON out. Amounts are integer cents; times are ISO 8601. Every route
is documented in ``doc/sandbox-daraja.md``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from penpay.sandbox.daraja.wire import ENCODER

if TYPE_CHECKING:
    from penpay.sandbox.daraja.sandbox import DarajaSandbox


def _json(body: Any, status: int = 200) -> Response:
    return Response(ENCODER.encode(body), status_code=status, media_type="application/json")


def _problem(message: str, status: int = 400) -> Response:
    return _json({"error": message}, status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    data = msgspec.json.decode(raw)
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def _plain(obj: Any) -> dict[str, Any]:
    out = asdict(obj)
    for key, value in out.items():
        if hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    return out


async def customers(sb: DarajaSandbox, request: Request) -> Response:
    """``GET /__sandbox__/customers``: every customer the sandbox knows."""
    return _json([_plain(c) for c in sb.world.customers.values()])


async def customer(sb: DarajaSandbox, request: Request) -> Response:
    """``GET``/``PUT /__sandbox__/customers/{phone}``: read or script one customer."""
    phone = request.path_params["phone"]
    if request.method == "PUT":
        try:
            body = await _body(request)
            sb.script_customer(
                phone,
                body.get("behaviour"),
                delay_s=body.get("delay_s"),
                balance_cents=body.get("balance_cents"),
                name=body.get("name"),
            )
        except (TypeError, ValueError, msgspec.DecodeError) as exc:
            return _problem(str(exc))
    return _json(_plain(sb.world.customer(phone)))


async def faults(sb: DarajaSandbox, request: Request) -> Response:
    """``GET`` lists, ``POST`` adds, ``DELETE`` clears fault rules."""
    if request.method == "POST":
        try:
            body = await _body(request)
            sb.inject_fault(
                body["endpoint"],
                body["kind"],
                count=body.get("count", 1),
                probability=body.get("probability"),
            )
        except (KeyError, TypeError, ValueError, msgspec.DecodeError) as exc:
            return _problem(f"bad fault rule: {exc}")
    elif request.method == "DELETE":
        sb.clear_faults()
    return _json([_plain(rule) for rule in sb.world.faults])


async def collections(sb: DarajaSandbox, request: Request) -> Response:
    """``GET /__sandbox__/collections``: money collected by STK Push."""
    return _json([_plain(c) for c in sb.world.collections])


async def payouts(sb: DarajaSandbox, request: Request) -> Response:
    """``GET /__sandbox__/payouts``: money paid out by B2C."""
    return _json([_plain(p) for p in sb.world.payouts])


async def accounts(sb: DarajaSandbox, request: Request) -> Response:
    """``GET``/``PUT /__sandbox__/accounts``: the merchant's account balances."""
    if request.method == "PUT":
        try:
            body = await _body(request)
            sb.set_accounts(
                working_cents=body.get("working_cents"),
                utility_cents=body.get("utility_cents"),
            )
        except (TypeError, ValueError, msgspec.DecodeError) as exc:
            return _problem(str(exc))
    return _json(_plain(sb.world.accounts))


async def callbacks(sb: DarajaSandbox, request: Request) -> Response:
    """``GET /__sandbox__/callbacks``: delivered and pending callbacks."""
    return _json(
        {
            "delivered": [r.as_json() for r in sb.callbacks.delivered],
            "pending": [r.as_json() for r in sb.callbacks.pending.values()],
        }
    )


async def requests(sb: DarajaSandbox, request: Request) -> Response:
    """``GET /__sandbox__/requests``: how many calls reached each endpoint."""
    return _json(dict(sb.world.request_counts))


async def reset(sb: DarajaSandbox, request: Request) -> Response:
    """``POST /__sandbox__/reset``: back to the initial state."""
    sb.reset()
    return _json({"reset": True})
