"""Daraja callbacks: STK results, B2C results and B2C queue time-outs.

Safaricom delivers each callback once and signs none of them, so the route
(1) refuses a token that does not verify (404) and a source address outside
the allow-list (403), (2) stores the raw body before anything else, (3)
answers 200 at once, and leaves the meaning to the transaction, which treats
the callback as a hint and confirms by query. Duplicates and late callbacks
are answered 200 too; the transaction ignores what it already knows.

Two sets of routes run the same code. PenPay hands Daraja only the neutral
ones (``/callbacks/stk``, ``/callbacks/b2c/{result,timeout}``,
``/callbacks/b2c/status/{result,timeout}``), because Daraja refuses a
callback URL that says "mpesa" or "query". API.md's ``/callbacks/mpesa/...``
routes stay for URLs handed out before; there ``?query=status`` still marks
a Transaction Status answer.
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from penpay.actors import daraja
from penpay.actors.callbacks import CallbackTokens
from penpay.actors.mpesa import STATUS_QUERY_MARK
from penpay.actors.saga import B2CResult, B2CUnknown, Input, StkCallback
from penpay.actors.views import rfc3339
from penpay.engine import ActorSystem, EngineError
from penpay.http.auth.guards import admin_only
from penpay.http.problems import Problem
from penpay.http.proxies import in_any, parse_address
from penpay.http.responses import json_response
from penpay.storage.raw_callbacks import InMemoryRawCallbacks, RawCallback, RawCallbackStore

log = logging.getLogger("penpay.callbacks")

#: Safaricom's published callback source addresses (protocols.md section 1.11).
SAFARICOM_CALLBACK_IPS = (
    "196.201.214.200", "196.201.214.206", "196.201.213.114", "196.201.214.207",
    "196.201.214.208", "196.201.213.44", "196.201.212.127", "196.201.212.138",
    "196.201.212.129", "196.201.212.136", "196.201.212.74", "196.201.212.69",
)
LOOPBACK = ("127.0.0.0/8", "::1/128")
BODY_BYTES_MAX = 64 * 1024


class SourceAllowList:
    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def allows(self, address: str) -> bool:
        ip = parse_address(address)  # a dual-stack listener's IPv4 peer counts as IPv4
        return ip is not None and in_any(ip, self._networks)


@dataclass
class CallbackDeps:
    system: ActorSystem
    tokens: CallbackTokens
    store: RawCallbackStore = field(default_factory=InMemoryRawCallbacks)
    allow: SourceAllowList = field(default_factory=lambda: SourceAllowList(SAFARICOM_CALLBACK_IPS))


_ACK = json_response(daraja.STK_CALLBACK_ACK)

Endpoint = Callable[[Request], Awaitable[Response]]


async def _accept(request: Request, kind: str) -> tuple[CallbackDeps, str, str, bytes] | Response:
    deps: CallbackDeps | None = request.app.state.callbacks
    if deps is None:
        raise Problem(404, "not_found", "unknown callback")
    verified = deps.tokens.verify(request.path_params["token"])
    if verified is None:
        raise Problem(404, "not_found", "unknown callback")
    source = request.client.host if request.client else ""
    if not deps.allow.allows(source):
        log.warning("callback %s for %s refused from %s", kind, verified[1], source)
        raise Problem(403, "forbidden", "callbacks are accepted from M-Pesa only")
    body = await request.body()
    if len(body) > BODY_BYTES_MAX:
        raise Problem(413, "payload_too_large", "callback body too large")
    transaction_kind, transaction_id = verified
    clock = deps.system.clock
    await deps.store.store(RawCallback(kind, transaction_id, source, clock.now_ms(), body))
    return deps, transaction_kind, transaction_id, body


async def _deliver(deps: CallbackDeps, kind: str, transaction_id: str, message: Input) -> None:
    """Tell the transaction; a failure is logged, not raised: the callback is stored raw."""
    try:
        await deps.system.ref(deps.system.kinds[kind], transaction_id).tell(message)
    except EngineError as exc:  # stored raw already: an operator can replay it
        log.error("callback for %s/%s not delivered: %s", kind, transaction_id, exc)
    except Exception:
        log.exception("callback for %s/%s not delivered; kept raw", kind, transaction_id)


async def _process(
    deps: CallbackDeps, kind: str, transaction_id: str, what: str, build: Callable[[], Input]
) -> Response:
    """Turn an accepted callback into a message and deliver it, then acknowledge it.

    Daraja never sends a callback twice, and the body is stored raw before
    this runs, so nothing here may turn into an error answer: whatever fails
    is logged for an operator and the callback is acknowledged all the same.
    """
    try:
        message = build()
    except daraja.DarajaProtocolError as exc:
        log.warning("unreadable %s for %s kept raw: %s", what, transaction_id, exc)
        return _ACK
    except Exception:
        log.exception("%s for %s could not be read; kept raw", what, transaction_id)
        return _ACK
    await _deliver(deps, kind, transaction_id, message)
    return _ACK


def _stk_input(body: bytes) -> StkCallback:
    parsed = daraja.parse_stk_callback(body)
    return StkCallback(
        checkout_request_id=parsed.checkout_request_id,
        result_code=parsed.result_code,
        result_desc=parsed.result_desc,
        receipt=parsed.receipt,
        amount_kes_cents=parsed.amount_cents,
        phone=parsed.phone,
    )


async def stk_callback(request: Request) -> Response:
    accepted = await _accept(request, "stk")
    if isinstance(accepted, Response):
        return accepted
    deps, kind, transaction_id, body = accepted
    return await _process(deps, kind, transaction_id, "STK callback", lambda: _stk_input(body))


#: Transaction Status values that say a payout failed for good.
PAYOUT_FAILED_STATUSES = frozenset({"failed", "declined", "cancelled", "expired"})


#: Tells whether a request to a B2C route is a Transaction Status answer.
StatusMark = Callable[[Request], bool]


def _marked_by_query(request: Request) -> bool:
    """The old routes: a status answer came with ``?query=status`` (still in flight)."""
    return request.url.query == STATUS_QUERY_MARK


def _payout_path(request: Request) -> bool:
    """``.../b2c/result`` and ``.../b2c/timeout``: the payout's own answer."""
    return False


def _status_path(request: Request) -> bool:
    """``.../b2c/status/...``: the answer to a Transaction Status query."""
    return True


def _status_input(body: bytes, transaction_id: str) -> B2CResult:
    """A Transaction Status answer about our payout, in the saga's terms.

    An answer naming one of this transaction's payouts (the queried
    OriginatorConversationID, which PenPay derives from the transaction id)
    is about that one: a late answer about a refund's earlier attempt must
    not be taken for the current attempt. Any other id (protocols.md 1.5:
    the id in a result "is not always ours") or none means the transaction's
    current payout, the only one it asked about.
    """
    status = daraja.parse_transaction_status_result(body)
    result = status.result
    about = _ours_or_current(status.originator_conversation_id, transaction_id)
    if not result.succeeded:  # e.g. 2032: M-Pesa holds no such payout, or not yet
        return B2CResult(about, result.result_code or "1", result.result_desc,
                         from_status_query=True)
    state = (status.status or "").lower()
    if state == "completed":
        return B2CResult(about, "0", result.result_desc, receipt=status.receipt,
                         amount_kes_cents=status.amount_cents, from_status_query=True)
    if state in PAYOUT_FAILED_STATUSES:
        return B2CResult(about, f"status {status.status}", result.result_desc,
                         from_status_query=True, payout_failed=True)
    return B2CResult(about, None, f"payout is {status.status!r}", from_status_query=True)


def _ours_or_current(named: str | None, transaction_id: str) -> str:
    """The payout id an answer names, if it is one of this transaction's; else "".

    Every attempt of a transaction's payouts (a refund's ``PPR<id>``, then
    ``PPR<id>N2`` …) reports to the same URL, so the answer's own id says
    which attempt it is about: an old attempt's late failure must not be
    read as the current one failing. Daraja does not always echo our id
    (protocols.md 1.5); "" then means the current attempt (the actor fills
    it in).
    """
    named = named or ""
    return named if transaction_id.replace("-", "") in named else ""


def _b2c_input(body: bytes, transaction_id: str, *, status_answer: bool) -> B2CResult:
    result = daraja.parse_result(body)
    if status_answer or result.get("TransactionStatus") is not None:
        # A URL without any mark: a status query sent before marks existed.
        return _status_input(body, transaction_id)
    payout = daraja.parse_b2c_result(body)
    return B2CResult(
        originator_conversation_id=_ours_or_current(result.originator_conversation_id,
                                                    transaction_id),
        result_code=result.result_code,
        result_desc=result.result_desc,
        receipt=payout.receipt,
        amount_kes_cents=payout.amount_cents,
    )


def b2c_result_route(is_status: StatusMark) -> Endpoint:
    """The B2C result endpoint; ``is_status`` says where a status answer is marked.

    One body of code for every route, so an answer reads the same whichever
    URL it came to: only the mark differs (path now, query string before).
    """

    async def b2c_result_callback(request: Request) -> Response:
        status_answer = is_status(request)
        accepted = await _accept(request, "b2c_status_result" if status_answer else "b2c_result")
        if isinstance(accepted, Response):
            return accepted
        deps, kind, transaction_id, body = accepted
        return await _process(
            deps, kind, transaction_id, "B2C result",
            lambda: _b2c_input(body, transaction_id, status_answer=status_answer),
        )  # fmt: skip

    return b2c_result_callback


def _timeout_input(*, status_answer: bool) -> Input:
    if status_answer:  # the query timed out, not the payout
        return B2CResult("", None, "status query timed out", from_status_query=True)
    return B2CUnknown("", "M-Pesa queue time-out")


def b2c_timeout_route(is_status: StatusMark) -> Endpoint:
    """The queue time-out endpoint; ``is_status`` as for :func:`b2c_result_route`."""

    async def b2c_timeout_callback(request: Request) -> Response:
        status_answer = is_status(request)
        accepted = await _accept(request, "b2c_status_timeout" if status_answer else "b2c_timeout")
        if isinstance(accepted, Response):
            return accepted
        deps, kind, transaction_id, _ = accepted
        return await _process(
            deps, kind, transaction_id, "B2C time-out",
            lambda: _timeout_input(status_answer=status_answer),
        )  # fmt: skip

    return b2c_timeout_callback


@admin_only
async def admin_raw_callbacks(request: Request) -> Response:
    """What M-Pesa told PenPay about one transaction, verbatim: for resolving it."""
    deps: CallbackDeps | None = request.app.state.callbacks
    transaction_id = request.path_params["id"]
    try:
        transaction_id = str(uuid.UUID(transaction_id))
    except ValueError:
        raise Problem(404, "not_found", "no such transaction") from None
    stored = await deps.store.for_transaction(transaction_id) if deps is not None else []
    return json_response({
        "transaction_id": transaction_id,
        "callbacks": [
            {
                "kind": c.kind,
                "source": c.source,
                "received_at": rfc3339(c.received_at_ms),
                "body": c.body.decode("utf-8", errors="replace"),
            }
            for c in stored
        ],
    })


def _callback_routes(prefix: str) -> list[Route]:
    """The routes whose URLs PenPay hands Daraja (``CallbackUrls``).

    Neutral and lowercase: Daraja refuses a CallBackURL that says "mpesa" or
    "query" (protocols.md 1.11). A status answer is marked by its path.
    They stay under ``/callbacks/`` so the rate-limit exemption and the
    callback body limit, both keyed on that prefix, cover them.
    """
    base = f"{prefix}/callbacks"
    return [
        Route(f"{base}/stk/{{token}}", stk_callback, methods=["POST"]),
        Route(f"{base}/b2c/result/{{token}}", b2c_result_route(_payout_path),
              methods=["POST"]),
        Route(f"{base}/b2c/timeout/{{token}}", b2c_timeout_route(_payout_path),
              methods=["POST"]),
        Route(f"{base}/b2c/status/result/{{token}}", b2c_result_route(_status_path),
              methods=["POST"]),
        Route(f"{base}/b2c/status/timeout/{{token}}", b2c_timeout_route(_status_path),
              methods=["POST"]),
    ]  # fmt: skip


def _contract_routes(prefix: str) -> list[Route]:
    """The routes API.md documents; URLs handed out before still point here."""
    base = f"{prefix}/callbacks/mpesa"
    return [
        Route(f"{base}/stk/{{token}}", stk_callback, methods=["POST"]),
        Route(f"{base}/b2c/result/{{token}}", b2c_result_route(_marked_by_query),
              methods=["POST"]),
        Route(f"{base}/b2c/timeout/{{token}}", b2c_timeout_route(_marked_by_query),
              methods=["POST"]),
    ]  # fmt: skip


def routes(prefix: str = "/api/v1") -> list[Route]:
    return [
        Route(f"{prefix}/admin/transactions/{{id}}/callbacks", admin_raw_callbacks,
              methods=["GET"]),
        *_callback_routes(prefix),
        *_contract_routes(prefix),
    ]
