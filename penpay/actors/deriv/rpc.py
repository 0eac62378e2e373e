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

import heapq
import logging
import math
from collections.abc import Callable
from typing import Any

import trio

from penpay.actors.deriv.errors import ConnectionLost, DerivTimeout, NotSent
from penpay.actors.deriv.transport import MessageConnection, TransportClosed
from penpay.actors.deriv.wire import WireFormatError, decode, encode

log = logging.getLogger(__name__)

StreamHandler = Callable[[dict[str, Any]], None]


class _Pending:
    """One call's reply slot, on trio's low-level parking (no Event, no cancel scope)."""

    __slots__ = ("done", "on_stream", "response", "task")

    def __init__(self, on_stream: StreamHandler | None) -> None:
        self.on_stream = on_stream
        self.response: dict[str, Any] | None = None
        self.task: trio.lowlevel.Task | None = None
        self.done = False
        """Answered, timed out, failed or abandoned: no further wake-up."""

    def wake(self) -> None:
        self.done = True
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        self.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self.task = None
            self.done = True
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


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
        self._send_nowait: Callable[[str], bool] | None = getattr(conn, "send_nowait", None)
        self._deadlines: list[tuple[float, int, _Pending]] = []
        self._deadline_seq = 0
        self._sleeping_until = math.inf
        self._timer_scope: trio.CancelScope | None = None
        self._timer_lot = trio.lowlevel.ParkingLot()
        self._timer_running = False

    @property
    def pending_count(self) -> int:
        """Calls waiting for an answer (bounded by the callers in flight)."""
        return len(self._pending)

    async def run(self) -> None:
        """Read and route messages until the connection closes; also times calls out."""
        reason = "reader stopped"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._expire)
                self._timer_running = True
                try:
                    while True:
                        try:
                            text = await self._conn.get_message()
                        except TransportClosed as exc:
                            reason = exc.reason
                            return
                        self._route(text)
                finally:
                    self._timer_running = False
                    nursery.cancel_scope.cancel()
        finally:
            self.fail_all(reason)

    def _add_deadline(self, deadline: float, pending: _Pending) -> None:
        heap = self._deadlines
        if len(heap) > 2 * len(self._pending) + 64:
            # Answered calls are dropped lazily; compact before they pile up.
            heap[:] = [entry for entry in heap if not entry[2].done]
            heapq.heapify(heap)
        self._deadline_seq += 1
        heapq.heappush(heap, (deadline, self._deadline_seq, pending))
        if deadline < self._sleeping_until:
            if self._timer_scope is not None:
                self._timer_scope.cancel()
            else:
                self._timer_lot.unpark_all()

    async def _expire(self) -> None:
        """One task and a heap time out every waiting call (not a cancel scope per call)."""
        heap = self._deadlines
        while True:
            while heap and heap[0][2].done:
                heapq.heappop(heap)
            if not heap:
                self._sleeping_until = math.inf
                await self._timer_lot.park()
                continue
            deadline, _, pending = heap[0]
            if deadline <= trio.current_time():
                heapq.heappop(heap)
                pending.wake()
                continue
            self._sleeping_until = deadline
            with trio.CancelScope() as self._timer_scope:
                await trio.sleep_until(deadline)
            self._timer_scope = None
            self._sleeping_until = math.inf

    def fail_all(self, reason: str) -> None:
        """Mark the connection dead and wake every waiting caller."""
        first = self.closed_reason is None
        if first:
            self.closed_reason = reason
        for pending in list(self._pending.values()):
            pending.wake()
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
            pending.wake()
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
        text = encode({**request, "req_id": req_id})
        try:
            send_nowait = self._send_nowait
            if self._timer_running and send_nowait is not None and self._queued(send_nowait, text):
                # Fast path: queued without waiting; the timer task enforces the deadline.
                self._add_deadline(trio.current_time() + timeout_s, pending)
                await pending.wait()
            else:
                with trio.move_on_after(timeout_s):
                    try:
                        await self._conn.send_message(text)
                    except TransportClosed as exc:
                        self.fail_all(exc.reason)
                        raise ConnectionLost(
                            f"connection closed while sending: {exc.reason}"
                        ) from None
                    await pending.wait()
        finally:
            pending.done = True
            del self._pending[req_id]
        if pending.response is not None:
            return pending.response
        if self.closed_reason is not None:
            raise ConnectionLost(f"connection closed: {self.closed_reason}")
        raise DerivTimeout(f"no answer to req_id {req_id} within {timeout_s:g} s")

    def _queued(self, send_nowait: Callable[[str], bool], text: str) -> bool:
        """Queue without waiting; False when the transport would block (back-pressure)."""
        try:
            return send_nowait(text)
        except TransportClosed as exc:
            self.fail_all(exc.reason)
            raise ConnectionLost(f"connection closed while sending: {exc.reason}") from None
