"""``Idempotency-Key`` for Starlette endpoints (API.md conventions, reliability.md §1.5).

Wrap an endpoint that moves money::

    @idempotent
    async def create_deposit(request: Request) -> Response: ...

    Route("/api/v1/deposits", create_deposit, methods=["POST"])

The wrapper authenticates the caller (the key is scoped to the user), then:

* no key → 400 ``idempotency_key_missing``; not 8-255 printable ASCII → 400
  ``idempotency_key_invalid``;
* same key, different method, route or body → 422 ``idempotency_key_reused``;
* same key while the first request still runs → 409
  ``idempotency_request_in_progress`` with ``Retry-After: 1``;
* same key and body after completion → the stored status, body and
  ``Location``, with ``Idempotent-Replayed: true``; the endpoint does not run;
* the endpoint answers 5xx, 429 or raises → nothing is stored, the lease is
  released, and a retry with the same key runs again.

The body fingerprint is ``sha256(method \\n route template \\n canonical
JSON)`` where canonical JSON has sorted keys and no whitespace, so
re-serialising the same object does not count as a different request.

The lease (``lease_s``, default 90 s) must outlast the endpoint: endpoints
should hand work to an actor and answer 202 rather than wait for M-Pesa.
Business effects must still be unique in their own tables; the key only
gives the client a safe retry.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import wraps
from typing import TYPE_CHECKING, overload

import msgspec
import trio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from penpay.engine.clock import Clock
from penpay.errors import PenPayError
from penpay.http.auth.body import UNDECODABLE
from penpay.http.auth.guards import require_user
from penpay.http.problems import Problem, http_exception_handler
from penpay.storage.idempotency_keys import (
    RETENTION_S,
    IdempotencyRequest,
    IdempotencyStore,
    StoredResponse,
)

if TYPE_CHECKING:
    from penpay.http.services import Services

log = logging.getLogger("penpay.http.idempotency")

Endpoint = Callable[[Request], Awaitable[Response]]
HEADER = "Idempotency-Key"
LEASE_S = 90.0
KEY_LENGTH_MIN = 8
KEY_LENGTH_MAX = 255
REAP_INTERVAL_S = 3600.0
_KEY = re.compile(rf"^[\x21-\x7e]{{{KEY_LENGTH_MIN},{KEY_LENGTH_MAX}}}$")
#: Response headers replayed with the stored body.
_KEPT_HEADERS = ("content-type", "location")


def fingerprint(method: str, route: str, body: bytes) -> bytes:
    """sha256 over method, route template and the body in canonical form."""
    try:
        canonical = msgspec.json.encode(msgspec.json.decode(body), order="sorted") if body else b""
    except UNDECODABLE:  # not JSON (or nested too deep): the endpoint will refuse it
        canonical = body  # hash the bytes as sent
    return hashlib.sha256(method.encode() + b"\n" + route.encode() + b"\n" + canonical).digest()


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else request.url.path


def _key(request: Request) -> str:
    key = request.headers.get(HEADER)
    if key is None:
        raise Problem(400, "idempotency_key_missing", f"This route requires an {HEADER} header.")
    if not _KEY.match(key):
        raise Problem(
            400,
            "idempotency_key_invalid",
            f"{HEADER} must be {KEY_LENGTH_MIN} to {KEY_LENGTH_MAX} printable ASCII characters.",
        )
    return key


def _replay(stored: StoredResponse) -> Response:
    headers = {**stored.headers, "Idempotent-Replayed": "true"}
    media_type = headers.pop("content-type", None)
    return Response(stored.body, status_code=stored.status, headers=headers, media_type=media_type)


async def _run(endpoint: Endpoint, request: Request) -> Response:
    """The endpoint's answer, with its Problem/HTTPException turned into a response."""
    try:
        return await endpoint(request)
    except Problem as problem:
        return problem.response()
    except HTTPException as exc:
        return await http_exception_handler(request, exc)


def _storable(response: Response) -> bool:
    return response.status_code < 500 and response.status_code != 429


@overload
def idempotent(endpoint: Endpoint) -> Endpoint: ...
@overload
def idempotent(*, lease_s: float = LEASE_S) -> Callable[[Endpoint], Endpoint]: ...


def idempotent(
    endpoint: Endpoint | None = None, *, lease_s: float = LEASE_S
) -> Endpoint | Callable[[Endpoint], Endpoint]:
    """Make ``endpoint`` honour ``Idempotency-Key``; use as ``@idempotent`` or
    ``@idempotent(lease_s=…)``."""

    def decorate(inner: Endpoint) -> Endpoint:
        @wraps(inner)
        async def wrapper(request: Request) -> Response:
            services: Services = request.app.state.services
            principal = await require_user(request)
            key = _key(request)
            store = services.idempotency
            if store is None or services.auth is None:
                raise Problem(503, "service_unavailable", "Idempotency is not configured.")
            clock = services.auth.clock
            route = _route_template(request)
            body = await request.body()  # cached on the request; the endpoint reads it again
            claim = await store.claim(
                IdempotencyRequest(
                    principal_id=principal.user_id,
                    key=key,
                    method=request.method,
                    route=route,
                    fingerprint=fingerprint(request.method, route, body),
                ),
                now=clock.now(),
                lease_s=lease_s,
            )
            if claim.kind == "mismatch":
                raise Problem(
                    422,
                    "idempotency_key_reused",
                    f"This {HEADER} was already used for a different request.",
                )
            if claim.kind == "in_progress":
                raise Problem(
                    409,
                    "idempotency_request_in_progress",
                    f"A request with this {HEADER} is still being handled.",
                    headers={"Retry-After": "1"},
                )
            if claim.kind == "replay":
                assert claim.response is not None
                return _replay(claim.response)
            return await _execute(
                inner, request, store, principal.user_id, key, claim.lease, clock
            )

        return wrapper

    return decorate(endpoint) if endpoint is not None else decorate


async def _execute(
    endpoint: Endpoint,
    request: Request,
    store: IdempotencyStore,
    principal_id: uuid.UUID,
    key: str,
    lease: int,
    clock: Clock,
) -> Response:
    try:
        response = await _run(endpoint, request)
    except BaseException:
        with trio.CancelScope(shield=True):
            await store.release(principal_id, key, lease)
        raise
    if not _storable(response):
        with trio.CancelScope(shield=True):
            await store.release(principal_id, key, lease)
        return response
    body = getattr(response, "body", None)
    if not isinstance(body, bytes):
        log.error("idempotent endpoint returned a streaming response; not stored")
        await store.release(principal_id, key, lease)
        return response
    kept = {n: response.headers[n] for n in _KEPT_HEADERS if n in response.headers}
    stored = StoredResponse(status=response.status_code, body=body, headers=kept)
    with trio.CancelScope(shield=True):
        await store.complete(principal_id, key, stored, now=clock.now(), lease=lease)
    return response


async def run_reaper(
    store: IdempotencyStore, clock: Clock, *, interval_s: float = REAP_INTERVAL_S
) -> None:
    """Forever: every ``interval_s``, delete finished keys older than 72 h (run in a nursery).

    A database that is down (a restart, a failover) only postpones the
    next run: the reaper shares its nursery with the HTTP server and the
    actors, which must not stop for housekeeping.
    """
    while True:
        cutoff = clock.now() - timedelta(seconds=RETENTION_S)
        try:
            while await store.reap(finished_before=cutoff):
                pass
        except (PenPayError, OSError) as exc:
            log.warning("idempotency keys not reaped (%s); again in %g s", exc, interval_s)
        await trio.sleep(interval_s)
