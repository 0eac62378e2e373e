"""Exceptions raised by the actor runtime.

Each names one situation and says what the caller can do about it.
"""

from __future__ import annotations

from penpay.errors import PenPayError


class EngineError(PenPayError):
    """Base class of actor-runtime failures."""


class Rejection(EngineError):
    """Raised by ``Actor.receive`` to refuse a message without crashing.

    The exception travels back to the asker; the actor's state is unchanged
    and it is *not* restarted. Use it for business refusals (insufficient
    balance, a transfer id reused with other fields); anything else raised by
    ``receive`` is a crash and goes to the supervisor.
    """


class AskTimeout(EngineError, TimeoutError):
    """An ``ask`` got no reply within its timeout.

    The message may still be processed later: an ask timeout says nothing
    about whether the actor acted on it.
    """

    def __init__(self, address: str, timeout_s: float, message: object) -> None:
        super().__init__(
            f"{address} did not answer {type(message).__name__} within {timeout_s:g} s"
        )
        self.address = address
        self.timeout_s = timeout_s


class ActorCrashed(EngineError):
    """The actor raised while handling this message; it is being restarted.

    ``__cause__`` is the original exception.
    """


class ActorParked(EngineError):
    """The actor failed too often and is parked; messages are refused at once.

    An operator can inspect it and clear it with ``ActorSystem.unpark``.
    """


class ActorStopped(EngineError):
    """The actor stopped (fenced by another activation, or passivated) before replying."""


class MailboxFull(EngineError):
    """A non-blocking ``tell_nowait`` found the mailbox at capacity (back-pressure)."""


class SystemClosed(EngineError):
    """The actor system is shutting down and accepts no new messages."""


class PersistenceError(EngineError):
    """Base class of journal and snapshot failures."""


class JournalUnavailable(PersistenceError):
    """The journal could not make events durable; none of them were committed."""


class ConcurrencyConflict(PersistenceError):
    """An append's expected sequence is stale: another activation wrote first.

    The actor that gets this stops instead of diverging from the journal.
    """

    def __init__(self, persistence_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"append to {persistence_id!r} expected sequence {expected}, journal is at {actual}"
        )
        self.persistence_id = persistence_id
        self.expected = expected
        self.actual = actual


class JournalCorrupt(PersistenceError):
    """A stored event or snapshot cannot be decoded (unknown type, bad payload).

    Recovery of that actor fails loudly and the actor is parked at once;
    restarting it would fail the same way.
    """
