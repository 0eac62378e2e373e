"""A message-oriented duplex connection, over a real WebSocket or in memory.

The Deriv client and the Deriv sandbox both speak through
:class:`MessageConnection`, so the same session code runs over a real
WebSocket (:mod:`penpay.actors.deriv.websocket`: integration tests,
benchmarks, production) and over a pair of trio memory channels
(deterministic simulation under ``MockClock``).

A *connector* is a zero-argument callable returning an async context manager
that yields a connected :class:`MessageConnection` and closes it on exit.
The context-manager shape keeps trio's structured concurrency intact: the
WebSocket's background reader and writer live exactly as long as the ``async with``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import trio

from penpay.errors import PenPayError


class TransportClosed(PenPayError):
    """The connection is closed (by either side); no more messages flow.

    ``reason`` is a short human string (close code and reason when known).
    """

    def __init__(self, reason: str = "connection closed") -> None:
        super().__init__(reason)
        self.reason = reason


class MessageConnection(Protocol):
    """A duplex stream of text messages.

    A connection may also offer ``send_nowait(message) -> bool``: queue the
    message without waiting, or return False when sending would have to wait
    (back-pressure). :class:`~penpay.actors.deriv.rpc.DerivRpc` uses it when
    present to skip a cancel scope per call; it is optional.
    """

    async def send_message(self, message: str) -> None:
        """Send one message; raises :class:`TransportClosed` if closed."""

    async def get_message(self) -> str:
        """Wait for the next message; raises :class:`TransportClosed` when closed."""

    async def aclose(self) -> None:
        """Close both directions; idempotent."""


Connector = Callable[[], AbstractAsyncContextManager[MessageConnection]]


class MemoryMessageConnection:
    """One end of an in-memory pair: a send channel and a receive channel."""

    def __init__(
        self, send: trio.MemorySendChannel[str], receive: trio.MemoryReceiveChannel[str]
    ) -> None:
        self._send = send
        self._receive = receive

    async def send_message(self, message: str) -> None:
        try:
            await self._send.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed("peer closed the in-memory connection") from None

    def send_nowait(self, message: str) -> bool:
        """Queue without waiting; False when the buffer is full."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed("peer closed the in-memory connection") from None
        return True

    async def get_message(self) -> str:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise TransportClosed("peer closed the in-memory connection") from None

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def memory_pair(
    buffer_messages: float = math.inf,
) -> tuple[MemoryMessageConnection, MemoryMessageConnection]:
    """Two connected ends; closing one makes the other see :class:`TransportClosed`.

    The buffer is unbounded by default because a WebSocket's kernel buffers
    decouple the two sides in the same way; pass a number to model back-pressure.
    """
    a_send, b_receive = trio.open_memory_channel[str](buffer_messages)
    b_send, a_receive = trio.open_memory_channel[str](buffer_messages)
    return MemoryMessageConnection(a_send, a_receive), MemoryMessageConnection(b_send, b_receive)


def websocket_connector(
    url: str, *, connect_timeout_s: float = 10.0, close_timeout_s: float = 1.0
) -> Connector:
    """A connector that opens a real WebSocket to ``url`` for each use.

    Connection failures (refused, handshake rejected, timeout) surface as
    :class:`TransportClosed`, the same exception as a later drop, so callers
    have one failure to handle. The connection is
    :class:`~penpay.actors.deriv.websocket.WebSocketConnection`, which
    coalesces the frames queued by concurrent callers into one write.
    """
    from penpay.actors.deriv.websocket import connect_websocket

    @asynccontextmanager
    async def connect() -> AsyncIterator[MessageConnection]:
        async with connect_websocket(
            url, connect_timeout_s=connect_timeout_s, close_timeout_s=close_timeout_s
        ) as ws:
            yield ws

    return connect
