"""The HTTP "network" between the world and PenPay: routes to the live app.

Clients and the Daraja sandbox call this ASGI app through
``httpx.ASGITransport``; it forwards to the current generation's app. While
PenPay is down it answers 503 (connection refused, as a client would see
it). A whole-system crash cancels every request in flight, and the client
gets a 503 marked ``x-sim-dropped`` (the connection died), which is how a
real client experiences a server dying under its request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import trio
from starlette.applications import Starlette

from penpay.sim.trace import Trace

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class _NoCookies(httpx.Cookies):
    """Neither PenPay nor the sandboxes set cookies: don't parse every response for them."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _CookielessClient(httpx.AsyncClient):
    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("this client keeps no cookies")


_NO_COOKIES = _NoCookies()


def in_process_client(
    app: Callable[..., Awaitable[None]], *, client: tuple[str, int] | None = None,
    base_url: str = "",
) -> httpx.AsyncClient:
    """An HTTP client whose requests go straight into ``app`` (no sockets)."""
    transport = httpx.ASGITransport(
        app, client=client or ("127.0.0.1", 123), raise_app_exceptions=False
    )
    return _CookielessClient(transport=transport, base_url=base_url)


class AppRouter:
    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.app: Starlette | None = None
        self._inflight: set[trio.CancelScope] = set()
        self.dropped = 0

    def up(self, app: Starlette) -> None:
        self.app = app

    def down(self) -> None:
        self.app = None
        for scope in self._inflight:
            scope.cancel()

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        app = self.app
        if app is None:
            await _unavailable(send, "x-sim-down")
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with trio.CancelScope() as cancel:
            self._inflight.add(cancel)
            try:
                await app(scope, receive, tracked_send)
            finally:
                self._inflight.discard(cancel)
        if cancel.cancelled_caught:
            self.dropped += 1
            if not started:
                await _unavailable(send, "x-sim-dropped")
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _unavailable(send: Callable[[Message], Awaitable[None]], marker: str) -> None:
    await send({
        "type": "http.response.start", "status": 503,
        "headers": [(marker.encode(), b"1"), (b"content-type", b"application/json")],
    })
    await send({"type": "http.response.body", "body": b"{}", "more_body": False})
