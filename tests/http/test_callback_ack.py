"""A Daraja callback that was stored raw is acknowledged 200, whatever happens after.

Daraja sends each callback once: an error answer after the body was stored
tells M-Pesa nothing useful and, before the fix, a body nested too deep for
msgspec (RecursionError), an unexpected parser error or a failed delivery
each escaped as a 500.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from penpay.actors import daraja
from penpay.actors.callbacks import CallbackTokens
from penpay.actors.daraja import schemas
from penpay.engine import open_actor_system
from penpay.http import callbacks
from penpay.http.callbacks import CallbackDeps, SourceAllowList
from penpay.storage.raw_callbacks import InMemoryRawCallbacks

SAFARICOM = "196.201.214.200"
DEEP = b'{"junk":' + b"[" * 5000 + b"]" * 5000 + b',"Body":{}}'
CANCELLED = (
    b'{"Body":{"stkCallback":{"MerchantRequestID":"m","CheckoutRequestID":"c",'
    b'"ResultCode":1032,"ResultDesc":"Request cancelled by user"}}}'
)


@pytest.fixture
async def deps() -> AsyncIterator[CallbackDeps]:
    """Callback wiring over an actor system with no kinds: every delivery fails (KeyError)."""
    async with open_actor_system() as system:
        yield CallbackDeps(
            system=system,
            tokens=CallbackTokens(bytes(32)),
            store=InMemoryRawCallbacks(),
            allow=SourceAllowList([SAFARICOM]),
        )


async def _post(deps: CallbackDeps, route: str, body: bytes) -> httpx.Response:
    app = Starlette(routes=callbacks.routes())
    app.state.callbacks = deps
    kind = "withdrawal" if route.startswith("b2c") else "deposit"
    token = deps.tokens.issue(kind, str(uuid.uuid4()))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(SAFARICOM, 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://penpay") as client:
        return await client.post(f"/api/v1/callbacks/mpesa/{route}/{token}", content=body)


def _stored(deps: CallbackDeps) -> list[bytes]:
    assert isinstance(deps.store, InMemoryRawCallbacks)
    return [c.body for c in deps.store.items]


def test_a_body_nested_too_deep_is_a_protocol_error() -> None:
    with pytest.raises(daraja.DarajaProtocolError):
        daraja.parse_stk_callback(DEEP)
    with pytest.raises(daraja.DarajaProtocolError):
        daraja.parse_result(DEEP)
    assert schemas.parse_error(DEEP) is None


@pytest.mark.parametrize("route", ["stk", "b2c/result"])
async def test_a_body_nested_too_deep_is_stored_and_acknowledged(
    deps: CallbackDeps, route: str
) -> None:
    answer = await _post(deps, route, DEEP)
    assert answer.status_code == 200, answer.text
    assert answer.json() == daraja.STK_CALLBACK_ACK
    assert _stored(deps) == [DEEP]


async def test_an_unexpected_parser_error_is_acknowledged(
    deps: CallbackDeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(raw: bytes) -> object:
        raise ZeroDivisionError("a parser bug")

    monkeypatch.setattr(daraja, "parse_stk_callback", broken)
    answer = await _post(deps, "stk", CANCELLED)
    assert answer.status_code == 200, answer.text
    assert _stored(deps) == [CANCELLED]


@pytest.mark.parametrize(("route", "body"), [("stk", CANCELLED), ("b2c/timeout", b"{}")])
async def test_a_failed_delivery_is_acknowledged(
    deps: CallbackDeps, route: str, body: bytes
) -> None:
    answer = await _post(deps, route, body)
    assert answer.status_code == 200, answer.text
    assert _stored(deps) == [body]
