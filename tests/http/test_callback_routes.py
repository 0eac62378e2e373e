"""The neutral callback routes read an answer exactly as API.md's routes do.

PenPay now hands Daraja ``/callbacks/b2c/status/{result,timeout}/<token>``
for Transaction Status answers instead of ``/callbacks/mpesa/b2c/...`` with
``?query=status`` (Daraja refuses "mpesa" and "query" in a callback URL,
protocols.md 1.11). A status answer must read the same on either: a failed
*query* read as a failed *payout* would send money back to Deriv while
M-Pesa still pays the customer. The old routes stay for URLs in flight.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from starlette.applications import Starlette

from penpay.actors.callbacks import CallbackTokens
from penpay.actors.mpesa import CallbackUrls
from penpay.actors.saga import Input
from penpay.engine import open_actor_system
from penpay.http import callbacks
from penpay.http.callbacks import CallbackDeps, SourceAllowList
from penpay.http.problems import Problem, problem_handler
from penpay.storage.raw_callbacks import InMemoryRawCallbacks, RawCallback

SAFARICOM = "196.201.214.200"
API = "/api/v1/callbacks"
#: Issued by the base64url implementation under ``bytes(32)``, before hex.
LEGACY_TX = "0193a000-0000-7000-8000-000000000002"
LEGACY_TOKEN = f"w{LEGACY_TX}.dR2PeWxp1g6UlwoZWdqEe7mrKKexEYSt"

Delivered = list[tuple[str, str, Input]]


def status_answer(code: int, status: str | None) -> bytes:
    result: dict[str, Any] = {
        "ResultType": 0, "ResultCode": code, "ResultDesc": "desc",
        "OriginatorConversationID": "q-1", "ConversationID": "AG_q", "TransactionID": "",
    }  # fmt: skip
    if status is not None:
        result["ResultParameters"] = {"ResultParameter": [
            {"Key": "TransactionStatus", "Value": status},
            {"Key": "ReceiptNo", "Value": "SAB123"},
            {"Key": "Amount", "Value": "1500"},
        ]}  # fmt: skip
    return msgspec.json.encode({"Result": result})


PAYOUT_FAILED = msgspec.json.encode({"Result": {
    "ResultType": 0, "ResultCode": 2001, "ResultDesc": "The initiator information is invalid.",
    "OriginatorConversationID": "PPW1", "ConversationID": "AG_1", "TransactionID": "",
}})  # fmt: skip
QUEUE_TIMEOUT = msgspec.json.encode({"Result": {
    "ResultType": 1, "ResultCode": 1, "ResultDesc": "The service request timed out.",
    "OriginatorConversationID": "PPW1", "ConversationID": "AG_1", "TransactionID": "",
}})  # fmt: skip


@pytest.fixture
async def deps() -> AsyncIterator[CallbackDeps]:
    async with open_actor_system() as system:
        yield CallbackDeps(
            system=system,
            tokens=CallbackTokens(bytes(32)),
            store=InMemoryRawCallbacks(),
            allow=SourceAllowList([SAFARICOM]),
        )


@pytest.fixture
def delivered(monkeypatch: pytest.MonkeyPatch) -> Delivered:
    """What each callback told its transaction: ``(kind, transaction id, message)``."""
    told: Delivered = []

    async def record(deps: CallbackDeps, kind: str, transaction_id: str, message: Input) -> None:
        told.append((kind, transaction_id, message))

    monkeypatch.setattr(callbacks, "_deliver", record)
    return told


async def _post(deps: CallbackDeps, path: str, body: bytes) -> httpx.Response:
    app = Starlette(routes=callbacks.routes(), exception_handlers={Problem: problem_handler})
    app.state.callbacks = deps
    transport = httpx.ASGITransport(app=app, client=(SAFARICOM, 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://penpay") as client:
        return await client.post(path, content=body)


async def _read(
    deps: CallbackDeps, delivered: Delivered, path: Callable[[str], str], body: bytes
) -> tuple[str, str, Input]:
    """Post ``body`` for a fresh withdrawal: the raw kind stored and what was delivered."""
    transaction_id = str(uuid.uuid4())
    answer = await _post(deps, path(deps.tokens.issue("withdrawal", transaction_id)), body)
    assert answer.status_code == 200, answer.text
    stored = _stored(deps)[-1]
    kind, told, message = delivered[-1]
    assert (told, stored.transaction_id) == (transaction_id, transaction_id)
    return stored.kind, kind, message


def _stored(deps: CallbackDeps) -> list[RawCallback]:
    assert isinstance(deps.store, InMemoryRawCallbacks)
    return deps.store.items


STATUS_ANSWERS = [status_answer(0, "Completed"), status_answer(0, "Failed"),
                  status_answer(0, "Pending"), status_answer(2032, None)]  # fmt: skip


@pytest.mark.parametrize("body", STATUS_ANSWERS)
async def test_a_status_answer_reads_the_same_on_the_new_path_and_the_old_query(
    deps: CallbackDeps, delivered: Delivered, body: bytes
) -> None:
    new = await _read(deps, delivered, lambda t: f"{API}/b2c/status/result/{t}", body)
    old = await _read(deps, delivered, lambda t: f"{API}/mpesa/b2c/result/{t}?query=status", body)
    assert new == old
    assert new[0] == "b2c_status_result"
    assert new[2].from_status_query  # type: ignore[attr-defined]


async def test_a_status_query_timeout_reads_the_same_on_the_new_path_and_the_old_query(
    deps: CallbackDeps, delivered: Delivered
) -> None:
    new = await _read(deps, delivered, lambda t: f"{API}/b2c/status/timeout/{t}", QUEUE_TIMEOUT)
    old = await _read(
        deps, delivered, lambda t: f"{API}/mpesa/b2c/timeout/{t}?query=status", QUEUE_TIMEOUT
    )
    assert new == old
    assert new[0] == "b2c_status_timeout"
    assert new[2].from_status_query and not new[2].payout_failed  # type: ignore[attr-defined]


@pytest.mark.parametrize(("route", "body", "raw_kind"), [
    ("b2c/result", PAYOUT_FAILED, "b2c_result"),
    ("b2c/timeout", QUEUE_TIMEOUT, "b2c_timeout"),
])  # fmt: skip
async def test_a_payout_answer_reads_the_same_on_the_new_and_the_old_route(
    deps: CallbackDeps, delivered: Delivered, route: str, body: bytes, raw_kind: str
) -> None:
    new = await _read(deps, delivered, lambda t: f"{API}/{route}/{t}", body)
    old = await _read(deps, delivered, lambda t: f"{API}/mpesa/{route}/{t}", body)
    assert new == old
    assert new[0] == raw_kind
    assert not getattr(new[2], "from_status_query", False)


async def test_the_new_payout_route_ignores_a_query_string(
    deps: CallbackDeps, delivered: Delivered
) -> None:
    """Only the path marks a status answer on the new routes."""
    plain = await _read(deps, delivered, lambda t: f"{API}/b2c/result/{t}", PAYOUT_FAILED)
    marked = await _read(deps, delivered, lambda t: f"{API}/b2c/result/{t}?query=status",
                         PAYOUT_FAILED)  # fmt: skip
    assert plain == marked


async def test_every_url_handed_to_daraja_is_served(
    deps: CallbackDeps, delivered: Delivered
) -> None:
    urls = CallbackUrls("https://pay.example.com")
    token = deps.tokens.issue("withdrawal", str(uuid.uuid4()))
    for url in (urls.stk(token), urls.b2c_result(token), urls.b2c_timeout(token),
                urls.b2c_status_result(token), urls.b2c_status_timeout(token)):  # fmt: skip
        answer = await _post(deps, urlsplit(url).path, b"{}")
        assert answer.status_code == 200, (url, answer.text)


@pytest.mark.parametrize("route", ["b2c/status/result", "mpesa/b2c/result?query=status"])
async def test_a_token_issued_in_the_old_form_is_still_accepted(
    deps: CallbackDeps, delivered: Delivered, route: str
) -> None:
    path, _, query = route.partition("?")
    url = f"{API}/{path}/{LEGACY_TOKEN}" + (f"?{query}" if query else "")
    answer = await _post(deps, url, status_answer(0, "Completed"))
    assert answer.status_code == 200, answer.text
    assert [(c.kind, c.transaction_id) for c in _stored(deps)] == [
        ("b2c_status_result", LEGACY_TX)
    ]
    [(kind, transaction_id, message)] = delivered
    assert (kind, transaction_id) == ("withdrawal", LEGACY_TX)
    assert message.result_code == "0"  # type: ignore[attr-defined]


@pytest.mark.parametrize("route", ["stk", "b2c/result", "b2c/status/timeout"])
async def test_a_forged_token_on_a_new_route_is_not_found(deps: CallbackDeps, route: str) -> None:
    forged = CallbackTokens(b"x" * 32).issue("withdrawal", str(uuid.uuid4()))
    answer = await _post(deps, f"{API}/{route}/{forged}", b"{}")
    assert answer.status_code == 404
    assert _stored(deps) == []
