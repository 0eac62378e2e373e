"""The persistence contract of event-sourced actors, and its in-memory twin.

An event-sourced actor's state is ``latest snapshot + the events after it``.
Each actor (a *persistence id*) owns a gap-free sequence of events numbered
from 1. An append names the sequence the writer last saw; if the journal has
moved on, the append fails with :class:`ConcurrencyConflict` and nothing is
written. That check is what makes a second activation of one actor harmless.

Every committed event also gets a global ``position`` (strictly increasing in
commit order) that the outbox relay follows.

Events are stored as MessagePack with a type tag and a schema version; see
:class:`EventCodec` for how an old version is upcast on read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import msgspec

from penpay.engine.errors import ConcurrencyConflict, JournalCorrupt, JournalUnavailable


class EventRecord(msgspec.Struct, frozen=True):
    """An encoded event ready to append."""

    type: str
    version: int
    payload: bytes


class StoredEvent(msgspec.Struct, frozen=True):
    """An event as the journal holds it."""

    persistence_id: str
    sequence: int
    type: str
    version: int
    payload: bytes
    position: int
    recorded_at_ms: int


class Snapshot(msgspec.Struct, frozen=True):
    """An actor's encoded state as of ``sequence``."""

    persistence_id: str
    sequence: int
    version: int
    payload: bytes


class Journal(Protocol):
    """What an event-sourced actor needs from storage.

    Implementations: :class:`InMemoryJournal` here, and the PostgreSQL journal
    in :mod:`penpay.storage`. Both pass one contract test suite.
    """

    async def append(
        self, persistence_id: str, expected_sequence: int, events: Sequence[EventRecord]
    ) -> int:
        """Append ``events`` after ``expected_sequence``; return the new last sequence.

        Returns only once the events are durable. Raises
        :class:`ConcurrencyConflict` if the stream is not at
        ``expected_sequence``, and :class:`JournalUnavailable` if durability
        could not be confirmed: the outcome is unknown (a connection lost
        during COMMIT may have committed). Reading the stream tells.
        """
        ...

    async def read_events(
        self, persistence_id: str, after_sequence: int = 0
    ) -> Sequence[StoredEvent]:
        """Events of one actor with ``sequence > after_sequence``, in order."""
        ...

    async def load_snapshot(self, persistence_id: str) -> Snapshot | None:
        """The latest snapshot of one actor, or None."""
        ...

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot; an older one than what is stored is ignored."""
        ...


class InMemoryJournal:
    """A journal in a dict: the twin of the PostgreSQL journal for simulation.

    It outlives the actor systems that use it, so a simulated whole-system
    crash keeps the journal and loses everything in memory. ``fail_appends``
    injects storage write failures (nothing written); ``lose_acks`` injects
    lost acknowledgements (the events are written, then the caller is told
    :class:`JournalUnavailable`, as when a connection drops during COMMIT).
    """

    def __init__(self, now_ms: Callable[[], int] | None = None) -> None:
        self._streams: dict[str, list[StoredEvent]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._all: list[StoredEvent] = []
        self._now_ms = now_ms or (lambda: 0)
        self.fail_appends: Callable[[str], bool] | None = None
        self.lose_acks: Callable[[str], bool] | None = None

    async def append(
        self, persistence_id: str, expected_sequence: int, events: Sequence[EventRecord]
    ) -> int:
        if self.fail_appends is not None and self.fail_appends(persistence_id):
            raise JournalUnavailable(f"injected write failure for {persistence_id!r}")
        stream = self._streams.setdefault(persistence_id, [])
        if len(stream) != expected_sequence:
            raise ConcurrencyConflict(persistence_id, expected_sequence, len(stream))
        now = self._now_ms()
        for record in events:
            stored = StoredEvent(
                persistence_id=persistence_id,
                sequence=len(stream) + 1,
                type=record.type,
                version=record.version,
                payload=record.payload,
                position=len(self._all) + 1,
                recorded_at_ms=now,
            )
            stream.append(stored)
            self._all.append(stored)
        if self.lose_acks is not None and self.lose_acks(persistence_id):
            raise JournalUnavailable(
                f"injected lost acknowledgement for {persistence_id!r} (the events are durable)"
            )
        return len(stream)

    async def read_events(
        self, persistence_id: str, after_sequence: int = 0
    ) -> Sequence[StoredEvent]:
        return list(self._streams.get(persistence_id, ())[after_sequence:])

    async def load_snapshot(self, persistence_id: str) -> Snapshot | None:
        return self._snapshots.get(persistence_id)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        current = self._snapshots.get(snapshot.persistence_id)
        if current is None or current.sequence <= snapshot.sequence:
            self._snapshots[snapshot.persistence_id] = snapshot

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> Sequence[StoredEvent]:
        """Committed events of every actor in position order (the outbox feed)."""
        return self._all[after_position : after_position + limit]

    def corrupt(self, persistence_id: str, sequence: int, *, type: str, payload: bytes) -> None:
        """Overwrite a stored event; lets tests prove recovery fails loudly."""
        stream = self._streams[persistence_id]
        old = stream[sequence - 1]
        stream[sequence - 1] = msgspec.structs.replace(old, type=type, payload=payload)


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class EventCodec:
    """Maps event classes to stored type tags and versions, and back.

    Each event class is a ``msgspec.Struct`` with a string ``tag`` and may set
    ``version: ClassVar[int]`` (default 1). To change an event's schema, bump
    its version and register an upcaster for every old version: a function
    from the old payload (as a dict) to the next version's payload. On read an
    old event runs through the chain ``v -> v+1 -> … -> current`` before it is
    converted to the current class, so the domain only ever sees current
    events and the journal is never rewritten.
    """

    def __init__(
        self,
        *event_types: type[msgspec.Struct],
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
    ) -> None:
        self._by_tag: dict[str, type[msgspec.Struct]] = {}
        self._tag_of: dict[type[msgspec.Struct], str] = {}
        # (tag, version) per class, looked up once per encode: every persisted
        # event goes through encode(), so it avoids the getattr each time.
        self._meta: dict[type[msgspec.Struct], tuple[str, int]] = {}
        for cls in event_types:
            tag = cls.__struct_config__.tag
            if not isinstance(tag, str):
                raise TypeError(f"{cls.__name__} needs a string tag (class ... Struct, tag=...)")
            if tag in self._by_tag:
                raise TypeError(f"event tag {tag!r} is used twice")
            self._by_tag[tag] = cls
            self._tag_of[cls] = tag
            self._meta[cls] = (tag, self.version_of(cls))
        self._upcasters = dict(upcasters or {})
        self._encoder = msgspec.msgpack.Encoder()
        self._decoders = {cls: msgspec.msgpack.Decoder(cls) for cls in event_types}

    @staticmethod
    def version_of(cls: type[msgspec.Struct]) -> int:
        return int(getattr(cls, "version", 1))

    def encode(self, event: msgspec.Struct) -> EventRecord:
        meta = self._meta.get(type(event))
        if meta is None:
            raise TypeError(f"{type(event).__name__} is not registered with this codec")
        return EventRecord(meta[0], meta[1], self._encoder.encode(event))

    def decode(self, stored: StoredEvent) -> Any:
        cls = self._by_tag.get(stored.type)
        where = f"{stored.persistence_id}#{stored.sequence}"
        if cls is None:
            raise JournalCorrupt(f"{where}: unknown event type {stored.type!r}")
        current = self.version_of(cls)
        try:
            if stored.version == current:
                return self._decoders[cls].decode(stored.payload)
            if stored.version > current:
                raise JournalCorrupt(
                    f"{where}: {stored.type} v{stored.version} is newer than this code (v{current})"
                )
            data: dict[str, Any] = msgspec.msgpack.decode(stored.payload)
            for version in range(stored.version, current):
                upcast = self._upcasters.get((stored.type, version))
                if upcast is None:
                    raise JournalCorrupt(f"{where}: no upcaster for {stored.type} v{version}")
                data = upcast(data)
            return msgspec.convert(data, cls)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise JournalCorrupt(f"{where}: cannot decode {stored.type}: {exc}") from exc
