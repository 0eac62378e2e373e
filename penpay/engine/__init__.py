"""The actor runtime PenPay is built on.

Actors are trio tasks with bounded mailboxes; ``ActorSystem.ref(Kind, key)``
addresses a virtual actor that is activated on its first message, recovered
from its journal, restarted by its supervisor when it crashes, and
passivated when idle. Nothing here knows about money.
"""

from penpay.engine.actor import Actor
from penpay.engine.clock import Clock, Entropy
from penpay.engine.errors import (
    ActorCrashed,
    ActorParked,
    ActorStopped,
    AskTimeout,
    ConcurrencyConflict,
    EngineError,
    JournalCorrupt,
    JournalUnavailable,
    MailboxFull,
    PersistenceError,
    Rejection,
    SystemClosed,
)
from penpay.engine.eventsourced import EventSourcedActor
from penpay.engine.introspection import ActorInfo, ActorStatus
from penpay.engine.persistence import (
    EventCodec,
    EventRecord,
    InMemoryJournal,
    Journal,
    Snapshot,
    StoredEvent,
)
from penpay.engine.ref import ActorRef
from penpay.engine.supervision import SupervisionPolicy
from penpay.engine.system import ActorSystem, EngineConfig, Timer, open_actor_system

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorInfo",
    "ActorParked",
    "ActorRef",
    "ActorStatus",
    "ActorStopped",
    "ActorSystem",
    "AskTimeout",
    "Clock",
    "ConcurrencyConflict",
    "EngineConfig",
    "EngineError",
    "Entropy",
    "EventCodec",
    "EventRecord",
    "EventSourcedActor",
    "InMemoryJournal",
    "Journal",
    "JournalCorrupt",
    "JournalUnavailable",
    "MailboxFull",
    "PersistenceError",
    "Rejection",
    "Snapshot",
    "StoredEvent",
    "SupervisionPolicy",
    "SystemClosed",
    "Timer",
    "open_actor_system",
]
