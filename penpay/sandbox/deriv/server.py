"""The Deriv sandbox's two front doors: a real WebSocket server and an in-process connector.

Both run the same :class:`~penpay.sandbox.deriv.protocol.DerivSession` on a
shared :class:`~penpay.sandbox.deriv.state.DerivWorld`; only the transport differs.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

import h11
import trio

from penpay.actors.deriv.transport import MessageConnection, memory_pair
from penpay.actors.deriv.websocket import (
    HandshakeFailed,
    open_websocket,
    server_accept,
    server_read_request,
    server_reject,
)
from penpay.sandbox.deriv.protocol import DerivSession
from penpay.sandbox.deriv.state import DerivWorld

WEBSOCKET_PATH = "/websockets/v3"
CLOSE_TIMEOUT_S = 0.2
"""How long a closing session waits for the client's close frame (a peer that is
gone never answers; a drop must not hold a server task for seconds)."""
HANDSHAKE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DerivSandboxAddress:
    """Where a started socket server listens."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{WEBSOCKET_PATH}?app_id=1089&l=EN&brand=deriv"


async def serve_deriv_sandbox(
    world: DerivWorld,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[DerivSandboxAddress] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``world`` over real WebSockets at ``ws://host:port/websockets/v3``.

    ``port=0`` picks a free port; ``nursery.start`` returns the bound address.
    Other paths are refused with HTTP 404 during the handshake.
    """

    async def handler(stream: trio.SocketStream) -> None:
        initial = await _upgrade(stream)
        if initial is None:
            await trio.aclose_forcefully(stream)
            return
        async with open_websocket(
            stream, client=False, initial=initial, close_timeout_s=CLOSE_TIMEOUT_S
        ) as ws:
            await DerivSession(world, ws).run()

    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, handler, port, host=host)
        )
        bound_port = listeners[0].socket.getsockname()[1]
        task_status.started(DerivSandboxAddress(host, bound_port))
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def _upgrade(stream: trio.SocketStream) -> bytes | None:
    """The HTTP upgrade: bytes read past it, or None (refused or broken; the caller closes)."""
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT_S):
            conn, request = await server_read_request(stream)
            if request.target.split("?", 1)[0] != WEBSOCKET_PATH:
                await server_reject(stream, conn, 404, b"unknown path")
                return None
            return await server_accept(stream, conn, request)
    except (
        HandshakeFailed,
        h11.ProtocolError,
        trio.TooSlowError,
        trio.BrokenResourceError,
        OSError,
    ):
        return None


class InProcessDerivSandbox:
    """Sessions over in-memory pairs, in a nursery the sandbox owns.

    Start it with ``await nursery.start(sandbox.run)``; then ``sandbox.connect``
    is a :data:`~penpay.actors.deriv.transport.Connector` for the client. Each
    ``connect()`` spawns a server session on the other end of a fresh pair;
    leaving the ``async with`` closes the client end, which ends the session.
    """

    def __init__(self, world: DerivWorld) -> None:
        self.world = world
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[MessageConnection]:
        if self._nursery is None:
            raise RuntimeError("start InProcessDerivSandbox.run before connecting")
        client_end, server_end = memory_pair(math.inf)
        self._nursery.start_soon(DerivSession(self.world, server_end).run)
        try:
            yield client_end
        finally:
            await client_end.aclose()
