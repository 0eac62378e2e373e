"""What operators can see of the actors: :class:`ActorInfo`."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec


class ActorStatus(enum.StrEnum):
    STARTING = "starting"  # recovering state in on_start
    RUNNING = "running"
    RESTARTING = "restarting"  # crashed, waiting out the back-off
    STOPPING = "stopping"  # passivating or shutting down
    FAILED = "failed"  # parked after too many crashes, or unrecoverable state


class ActorInfo(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    key: str
    status: ActorStatus
    mailbox_depth: int
    restarts: int
    messages: int
    last_message_at: datetime | None
    failure: str | None = None
