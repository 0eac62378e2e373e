"""Refuse oversized request bodies before they are read into memory.

The routes check a body's size only after ``await request.body()`` has
buffered all of it, so a client could make the process hold hundreds of MiB
just to be told 413. :class:`BodyLimit` refuses such a request early:

* a ``Content-Length`` above the limit is answered 413 at once, and the app
  never runs;
* otherwise ``receive`` is counted, and the first chunk that takes the body
  past the limit raises :class:`BodyTooLarge` (a 413 :class:`Problem`) in
  whoever is reading, so nothing more is pulled from the connection. That
  covers chunked uploads, which have no ``Content-Length``.

The limits stay where the routes define them (``auth.body.BODY_BYTES_MAX``,
``callbacks.BODY_BYTES_MAX``); the app passes them in, so each has one source.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from penpay.http.problems import Problem, run_or_answer


class BodyTooLarge(Problem):
    """413 ``payload_too_large``: raised from ``receive`` once the body passes its limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"Bodies are limited to {limit} bytes.")


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, or None when absent or not a number."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses these; count the bytes instead
    return None


class _LimitedReceive:
    """``receive`` that raises :class:`BodyTooLarge` instead of passing ``limit`` bytes on."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._received = 0

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limit:
                raise BodyTooLarge(self._limit)
        return message


class BodyLimit:
    """ASGI middleware: at most ``default_bytes`` of body per request.

    ``overrides`` maps path prefixes to their own limit (the longest matching
    prefix wins), e.g. ``{"/api/v1/callbacks/": 64 * 1024}``. Place it inside
    the error-handling middleware: a :class:`BodyTooLarge` raised where no
    Starlette handler turns it into a response is answered here.
    """

    def __init__(
        self, app: ASGIApp, default_bytes: int, overrides: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_bytes = default_bytes
        # Longest first, so the most specific prefix is found first.
        self._overrides = sorted((overrides or {}).items(), key=lambda kv: -len(kv[0]))

    def limit_for(self, path: str) -> int:
        """The body limit for ``path``."""
        for prefix, limit in self._overrides:
            if path.startswith(prefix):
                return limit
        return self.default_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            await BodyTooLarge(limit).response()(scope, receive, send)
            return
        await self._run_limited(scope, _LimitedReceive(receive, limit), send)

    async def _run_limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; answer a :class:`BodyTooLarge` nobody inside turned into a response."""

        def too_large(exc: Exception) -> Response | None:
            return exc.response() if isinstance(exc, BodyTooLarge) else None

        await run_or_answer(self.app, scope, receive, send, too_large)
