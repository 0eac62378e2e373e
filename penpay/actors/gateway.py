"""What the M-Pesa and Deriv gateway actors share: one request, one answer.

A transaction sends a :class:`GatewayRequest`; the gateway runs the call as
a task of its own (a slow provider never holds up its mailbox) and tells the
transaction what happened as an input. A bug in a call becomes an "unknown"
input, and an answer the transaction cannot take is logged, rather than a
crash that would cancel every other call in flight.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from penpay.actors.saga import Command, Input
from penpay.engine import Actor, EngineError

log = logging.getLogger("penpay.gateway")


class GatewayRequest(msgspec.Struct, frozen=True):
    """A command for a gateway actor, and where to send its answer."""

    command: Command
    reply_kind: str
    reply_key: str
    #: Whose transaction this is (a withdrawal is made with the user's Deriv token).
    user_id: str = ""


class GatewayActor(Actor):
    """Subclasses implement :meth:`call` and :meth:`unknown`."""

    async def receive(self, message: Any) -> Any:
        if not isinstance(message, GatewayRequest):
            raise TypeError(f"{self.ref.address} cannot handle {type(message).__name__}")
        self.start_task(self._execute, message)
        return None

    async def _execute(self, request: GatewayRequest) -> None:
        try:
            answer = await self.call(request.command, request.user_id)
        except Exception:
            log.exception("%s: %s failed unexpectedly", self.kind, type(request.command).__name__)
            answer = self.unknown(request.command, f"internal error in {self.kind}")
        if answer is None:
            return
        kind = self.system.kinds[request.reply_kind]
        try:
            await self.system.ref(kind, request.reply_key).tell(answer)
        except EngineError as exc:
            # The transaction cannot take it now (parked, shutting down). Its
            # recovery looks the outcome up; crashing here instead would cancel
            # every other call in flight, whose answers would then never come.
            log.warning("%s: answer %s for %s/%s not delivered: %s", self.kind,
                        type(answer).__name__, request.reply_kind, request.reply_key, exc)

    async def call(self, command: Command, user_id: str) -> Input | None:
        """Carry out ``command``; its outcome as an input (None: the answer comes later)."""
        raise NotImplementedError

    def unknown(self, command: Command, reason: str) -> Input | None:
        """The input that says ``command``'s outcome is unknown."""
        raise NotImplementedError
