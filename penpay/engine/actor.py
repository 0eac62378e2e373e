"""The :class:`Actor` base class: what a domain actor implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from penpay.engine.errors import Rejection

if TYPE_CHECKING:
    from penpay.engine.clock import Clock, Entropy
    from penpay.engine.ref import ActorRef
    from penpay.engine.system import ActorSystem, Timer


class Actor:
    """A unit of state whose mutations are serialised through one mailbox.

    Subclasses implement :meth:`receive`; its return value is the reply to an
    ``ask``. Raise :class:`~penpay.engine.Rejection` to refuse a message and
    leave state untouched; any other exception is a crash: the supervisor
    calls :meth:`on_failure`, then restarts a fresh instance (after back-off)
    which recovers its state in :meth:`on_start`.

    An instance is bound to its identity before :meth:`on_start` runs, so
    ``self.key``, ``self.ref``, ``self.system``, ``self.clock`` and
    ``self.entropy`` are available in every hook.
    """

    #: The kind's name in addresses, logs and the admin API.
    kind: ClassVar[str] = ""
    #: Above 1, queued messages are handed to :meth:`receive_batch` up to this
    #: many at a time, so one journal append can cover a whole run of them.
    batch_messages_max: ClassVar[int] = 1

    key: str
    ref: ActorRef
    system: ActorSystem

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("kind"):
            cls.kind = cls.__name__

    @property
    def clock(self) -> Clock:
        return self.system.clock

    @property
    def entropy(self) -> Entropy:
        return self.system.entropy

    async def on_start(self) -> None:
        """Called before the first message of every activation or restart."""

    async def receive(self, message: Any) -> Any:
        """Handle one message; the return value answers an ``ask``."""
        raise NotImplementedError(f"{type(self).__name__}.receive")

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        """Handle several queued messages at once; returns one reply per message.

        Only called when ``batch_messages_max > 1``. A reply that is a
        :class:`~penpay.engine.Rejection` *instance* is delivered to its asker
        as that exception. Raising crashes the actor: every message of the
        batch is answered with ``ActorCrashed``. The default handles the
        messages one by one through :meth:`receive`.
        """
        replies: list[Any] = []
        for message in messages:
            try:
                replies.append(await self.receive(message))
            except Rejection as rejection:
                replies.append(rejection)
        return replies

    async def on_passivate(self) -> None:
        """Called when the actor goes idle or the system shuts down, before :meth:`on_stop`."""

    async def on_stop(self) -> None:
        """Called once when this activation ends normally."""

    async def on_failure(self, error: BaseException) -> None:
        """Called when this instance crashed, before the supervisor acts."""

    def schedule(self, delay_s: float, message: Any) -> Timer:
        """Send ``message`` to this actor after ``delay_s`` seconds of trio time.

        Timers are in memory: they are cancelled when the activation stops or
        restarts. A deadline that must survive a restart is kept in persisted
        state and re-scheduled from it in :meth:`on_start`.
        """
        return self.system._schedule(self, delay_s, message)

    def start_task(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` concurrently with this actor's mailbox.

        For work that must not hold up the next message (an HTTP call to
        M-Pesa, a Deriv request). The task belongs to this activation: it is
        cancelled when the actor stops, passivates or restarts, and an
        exception in it crashes the actor (it goes to the supervisor).
        """
        self.system._start_task(self, fn, *args)

    def introspect(self) -> Any:
        """State shown to operators; by default a ``state`` struct if there is one."""
        state = getattr(self, "state", None)
        return msgspec.to_builtins(state) if state is not None else None
