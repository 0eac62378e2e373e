"""RFC 9457 problem+json errors with stable machine codes.

Every error a client sees is a :class:`Problem`: ``type``, ``title``,
``status``, ``detail``, ``code`` and optional field ``errors``. Anything else
that escapes a route becomes a bare ``internal_error``; its details go to the
log, never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from penpay.errors import PenPayError

log = logging.getLogger("penpay.http")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://docs.penpay.example/problems/"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


class FieldError(msgspec.Struct, frozen=True):
    field: str
    message: str


class Problem(PenPayError):
    """An error answer: raise it from a route, or build one with :meth:`response`."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "type": TYPE_BASE + self.code,
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "errors": [msgspec.to_builtins(e) for e in self.errors],
        }

    def response(self) -> Response:
        return Response(
            msgspec.json.encode(self.body()),
            status_code=self.status,
            media_type=PROBLEM_JSON,
            headers=self.headers,
        )


async def problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response()


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _CODES_BY_STATUS.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else code
    return Problem(exc.status_code, code, detail, headers=dict(exc.headers or {})).response()


_INTERNAL = "The server failed to handle this request."


async def unhandled_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Problem(500, "internal_error", _INTERNAL).response()


class UnhandledErrors:
    """Answer an unexpected exception with a problem+json 500, inside the other layers.

    Starlette's own last-resort handler sits outside every middleware, so its
    500 would carry no security headers and escape the request metrics. This
    one runs inside them; the outer handler is left for failures of the
    middleware themselves. Once a response has started, nothing can be said
    to the client any more, and the exception goes on to the server.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        def internal_error(exc: Exception) -> Response:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"),
                          exc_info=exc)
            return Problem(500, "internal_error", _INTERNAL).response()

        await run_or_answer(self.app, scope, receive, send, internal_error)


async def run_or_answer(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send,
    answer: Callable[[Exception], Response | None],
) -> None:
    """Run ``app``; if it raises before its response started, send ``answer(exc)`` instead.

    ``answer`` returns None for an exception it leaves alone, which goes on
    up. Once a response has started nothing can be said to the client any
    more, and every exception goes on up.
    """
    started = False

    async def tracked(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, tracked)
    except Exception as exc:
        response = None if started else answer(exc)
        if response is None:
            raise
        await response(scope, receive, send)
