"""Addresses of actors: :class:`ActorRef`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from penpay.engine.actor import Actor
    from penpay.engine.system import ActorSystem


class ActorRef:
    """The address of one actor identity (its kind and key).

    A ref is cheap and never stale: it names an identity, not an activation,
    so it stays valid across passivation, restarts and reactivation. Sending
    to it activates the actor if it is not live.
    """

    __slots__ = ("_system", "key", "kind")

    def __init__(self, system: ActorSystem, kind: type[Actor], key: str) -> None:
        self._system = system
        self.kind = kind
        self.key = key

    @property
    def address(self) -> str:
        return f"{self.kind.kind}/{self.key}"

    async def tell(self, message: Any) -> None:
        """Enqueue ``message``; waits while the mailbox is full (back-pressure)."""
        await self._system._deliver(self, message, None)

    def tell_nowait(self, message: Any) -> None:
        """Enqueue ``message`` or raise :class:`MailboxFull` at once."""
        self._system._deliver_nowait(self, message)

    async def ask(self, message: Any, *, timeout: float | None = None) -> Any:
        """Send ``message`` and wait for the actor's reply.

        Raises :class:`AskTimeout` after ``timeout`` seconds (default: the
        system's ``ask_timeout_s``), :class:`ActorParked` at once if the actor
        is parked, :class:`ActorCrashed` if handling the message crashed it,
        and re-raises any :class:`Rejection` the actor answered with.
        """
        return await self._system._ask(self, message, timeout)

    def __repr__(self) -> str:
        return f"<ActorRef {self.address}>"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ActorRef)
            and other.kind is self.kind
            and other.key == self.key
            and other._system is self._system
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.key))
