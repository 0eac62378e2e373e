"""Request/response multiplexing over one Deriv connection.

Every request gets the next ``req_id`` (monotonic per connection); the reader
hands each response to the waiting caller by ``req_id`` and each stream
message to its handler by ``subscription.id``. A caller that times out or is
cancelled removes its pending entry, so the map never grows beyond the
calls in flight; a response arriving after that is counted as late and
dropped. When the connection closes, every waiting caller is woken with
:class:`~penpay.actors.deriv.errors.ConnectionLost`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from penpay.actors.deriv.errors import ConnectionLost, DerivTimeout, NotSent
from penpay.actors.deriv.transport import MessageConnection, TransportClosed
from penpay.actors.deriv.wire import WireFormatError, decode, encode

log = logging.getLogger(__name__)

StreamHandler = Callable[[dict[str, Any]], None]


class _Pending:
    __slots__ = ("event", "on_stream", "response")

    def __init__(self, on_stream: StreamHandler | None) -> None:
        self.event = trio.Event()
        self.response: dict[str, Any] | None = None
        self.on_stream = on_stream


class DerivRpc:
    """One connection's multiplexer; run :meth:`run` in a task while calling."""

    def __init__(
        self, conn: MessageConnection, *, on_close: Callable[[DerivRpc], None] | None = None
    ) -> None:
        self._conn = conn
        self._on_close = on_close
        self._next_req_id = 1
        self._pending: dict[int, _Pending] = {}
        self._streams: dict[str, StreamHandler] = {}
        self.closed_reason: str | None = None
        self.closed = trio.Event()
        self.late_messages = 0

    @property
    def pending_count(self) -> int:
        """Calls waiting for an answer (bounded by the callers in flight)."""
        return len(self._pending)

    async def run(self) -> None:
        """Read and route messages until the connection closes."""
        reason = "reader stopped"
        try:
            while True:
                try:
                    text = await self._conn.get_message()
                except TransportClosed as exc:
                    reason = exc.reason
                    return
                self._route(text)
        finally:
            self.fail_all(reason)

    def fail_all(self, reason: str) -> None:
        """Mark the connection dead and wake every waiting caller."""
        first = self.closed_reason is None
        if first:
            self.closed_reason = reason
        for pending in self._pending.values():
            pending.event.set()
        self._streams.clear()
        self.closed.set()
        if first and self._on_close is not None:
            self._on_close(self)

    async def aclose(self) -> None:
        self.fail_all("closed by client")
        await self._conn.aclose()

    def _route(self, text: str) -> None:
        try:
            message = decode(text)
        except WireFormatError:
            log.warning("deriv: dropping a message that is not a JSON object")
            return
        req_id = message.get("req_id")
        pending = self._pending.get(req_id) if type(req_id) is int else None
        subscription = message.get("subscription")
        sub_id = subscription.get("id") if isinstance(subscription, dict) else None
        if pending is not None and pending.response is None:
            pending.response = message
            if pending.on_stream is not None and isinstance(sub_id, str):
                self._streams[sub_id] = pending.on_stream
            pending.event.set()
            return
        handler = self._streams.get(sub_id) if isinstance(sub_id, str) else None
        if handler is not None:
            handler(message)
            return
        self.late_messages += 1

    def forget_stream(self, sub_id: str) -> None:
        self._streams.pop(sub_id, None)

    async def call(
        self,
        request: dict[str, Any],
        *,
        timeout_s: float,
        on_stream: StreamHandler | None = None,
    ) -> dict[str, Any]:
        """Send ``request`` with a fresh ``req_id`` and return Deriv's answer (maybe an error).

        Raises :class:`NotSent` if the connection was already closed (nothing
        left this process), :class:`ConnectionLost` if it closed after the
        send began, :class:`DerivTimeout` after ``timeout_s``. With
        ``on_stream``, later messages of the subscription the answer opens are
        routed to it (registered before any of them can be read).
        """
        if self.closed_reason is not None:
            raise NotSent(f"connection closed: {self.closed_reason}")
        req_id = self._next_req_id
        self._next_req_id += 1
        pending = _Pending(on_stream)
        self._pending[req_id] = pending
        request = {**request, "req_id": req_id}
        try:
            with trio.move_on_after(timeout_s):
                try:
                    await self._conn.send_message(encode(request))
                except TransportClosed as exc:
                    self.fail_all(exc.reason)
                    raise ConnectionLost(f"connection closed while sending: {exc.reason}") from None
                await pending.event.wait()
        finally:
            del self._pending[req_id]
        if pending.response is not None:
            return pending.response
        if self.closed_reason is not None:
            raise ConnectionLost(f"connection closed: {self.closed_reason}")
        raise DerivTimeout(f"no answer to req_id {req_id} within {timeout_s:g} s")
