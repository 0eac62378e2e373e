"""Delivering callbacks the way Daraja does: once, late, and unsigned.

Each delivery is one POST through the injected ``httpx.AsyncClient`` (point
it at an ASGI app with ``httpx.ASGITransport`` for in-process runs). A failed
delivery is recorded and never retried (protocols.md 0.1). Deliveries run as
tasks in the sandbox's nursery, so closing the sandbox cancels them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import trio

from penpay.sandbox.daraja.wire import ENCODER


@dataclass(slots=True)
class CallbackRecord:
    """One scheduled or delivered callback, for the control API and tests."""

    id: int
    kind: str  # "stk", "b2c_result", "b2c_timeout", "status_result", ...
    url: str
    body: dict[str, Any]
    headers: dict[str, str]
    due_at: float  # trio time
    source_address: str
    delivered_at: datetime | None = None
    status_code: int | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "url": self.url,
            "body": self.body,
            "headers": self.headers,
            "due_at": self.due_at,
            "source_address": self.source_address,
            "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
            "status_code": self.status_code,
            "error": self.error,
        }


class CallbackDispatcher:
    """Schedules single-attempt callback deliveries in a nursery it is given."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        wall_clock: Callable[[], datetime],
        timeout_s: float,
        source_address: str,
        send_forwarded_for: bool,
    ) -> None:
        self._http = http
        self._wall_clock = wall_clock
        self._timeout_s = timeout_s
        self._source_address = source_address
        self._send_forwarded_for = send_forwarded_for
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self.pending: dict[int, CallbackRecord] = {}
        self.delivered: list[CallbackRecord] = []
        self._scopes: dict[int, trio.CancelScope] = {}
        # Set (and replaced) whenever a delivery finishes; tests wait on it.
        self._changed = trio.Event()

    def attach(self, nursery: trio.Nursery | None) -> None:
        self._nursery = nursery

    def schedule(
        self,
        kind: str,
        url: str,
        body: dict[str, Any],
        *,
        delay_s: float,
        headers: dict[str, str] | None = None,
    ) -> CallbackRecord:
        """Deliver ``body`` to ``url`` once, ``delay_s`` seconds from now."""
        if self._nursery is None:
            raise RuntimeError("the Daraja sandbox is not running (use `async with sandbox:`)")
        sent_headers = {"Content-Type": "application/json;charset=UTF-8", **(headers or {})}
        if self._send_forwarded_for:
            sent_headers["X-Forwarded-For"] = self._source_address
        record = CallbackRecord(
            id=next(self._ids),
            kind=kind,
            url=url,
            body=body,
            headers=sent_headers,
            due_at=trio.current_time() + delay_s,
            source_address=self._source_address,
        )
        self.pending[record.id] = record
        self._nursery.start_soon(self._deliver, record, delay_s)
        return record

    async def _deliver(self, record: CallbackRecord, delay_s: float) -> None:
        if record.id not in self.pending:  # cancelled before the task started
            return
        with trio.CancelScope() as scope:
            self._scopes[record.id] = scope
            try:
                await self._deliver_once(record, delay_s)
            finally:
                self._scopes.pop(record.id, None)

    async def _deliver_once(self, record: CallbackRecord, delay_s: float) -> None:
        await trio.sleep(delay_s)
        content = ENCODER.encode(record.body)
        try:
            with trio.fail_after(self._timeout_s):
                response = await self._http.post(
                    record.url, content=content, headers=record.headers
                )
            record.status_code = response.status_code
        except trio.TooSlowError:
            record.error = f"receiver did not answer within {self._timeout_s} s"
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        record.delivered_at = self._wall_clock()
        self.pending.pop(record.id, None)
        self.delivered.append(record)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_delivered(self, count: int) -> list[CallbackRecord]:
        """Block until at least ``count`` callbacks have been attempted."""
        while len(self.delivered) < count:
            await self._changed.wait()
        return self.delivered

    def reset(self) -> None:
        """Cancel every scheduled delivery and forget the history."""
        for scope in self._scopes.values():
            scope.cancel()
        self.pending.clear()
        self.delivered.clear()
