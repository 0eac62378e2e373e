"""The Deriv sandbox's two front doors: a real WebSocket server and an in-process connector.

Both run the same :class:`~penpay.sandbox.deriv.protocol.DerivSession` on a
shared :class:`~penpay.sandbox.deriv.state.DerivWorld`; only the transport differs.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NoReturn

import trio
import trio_websocket

from penpay.actors.deriv.transport import (
    MessageConnection,
    WebSocketMessageConnection,
    memory_pair,
)
from penpay.sandbox.deriv.protocol import DerivSession
from penpay.sandbox.deriv.state import DerivWorld

WEBSOCKET_PATH = "/websockets/v3"
CLOSE_TIMEOUT_S = 0.2
"""How long a closing session waits for the client's close frame (a peer that is
gone never answers; a drop must not hold a server task for seconds)."""


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

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        if request.path.split("?", 1)[0] != WEBSOCKET_PATH:
            await request.reject(404, body=b"unknown path")
            return
        ws = await request.accept()
        conn = WebSocketMessageConnection(ws, close_timeout_s=CLOSE_TIMEOUT_S)
        await DerivSession(world, conn).run()

    async with trio.open_nursery() as nursery:
        server: trio_websocket.WebSocketServer = await nursery.start(
            trio_websocket.serve_websocket, handler, host, port, None
        )
        task_status.started(DerivSandboxAddress(host, server.port))
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


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
