"""Event-sourced actors: state = latest snapshot + the events after it."""

from __future__ import annotations

import functools
import logging
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from penpay.engine.actor import Actor
from penpay.engine.errors import JournalCorrupt
from penpay.engine.persistence import EventCodec, Snapshot

log = logging.getLogger(__name__)

S = TypeVar("S", bound=msgspec.Struct)


class EventSourcedActor(Actor, Generic[S]):
    """An actor whose state is rebuilt from its journal.

    A command handler decides, then calls :meth:`persist` with the events
    that record the decision. ``persist`` returns only once the journal has
    made them durable, then applies them to :attr:`state` with the pure
    :meth:`apply`. If the append fails, state is untouched and the exception
    propagates, so the supervisor restarts the actor from what *was*
    committed; memory never runs ahead of the journal.

    Subclasses set ``codec`` (their event types) and ``state_type`` and
    implement :meth:`initial_state` and :meth:`apply`. Override
    :meth:`on_recovered` to re-derive timers from recovered state.
    """

    codec: ClassVar[EventCodec]
    state_type: ClassVar[type[msgspec.Struct]]
    #: Bump when ``state_type`` changes incompatibly: old snapshots are then
    #: ignored and state is replayed from the events alone.
    state_version: ClassVar[int] = 1
    #: Snapshot after this many events; None takes the system's setting.
    snapshot_every_events: ClassVar[int | None] = None

    state: S
    sequence: int
    _snapshot_sequence: int

    @functools.cached_property
    def persistence_id(self) -> str:
        return f"{self.kind}/{self.key}"  # an instance never changes key

    def initial_state(self) -> S:
        raise NotImplementedError(f"{type(self).__name__}.initial_state")

    def apply(self, state: S, event: Any) -> S:
        """Return the state after ``event``; pure, no I/O, no clock."""
        raise NotImplementedError(f"{type(self).__name__}.apply")

    async def on_start(self) -> None:
        await self._recover()
        await self.on_recovered()

    async def on_recovered(self) -> None:
        """Called after recovery, before the first message."""

    async def _recover(self) -> None:
        journal = self.system.journal
        pid = self.persistence_id
        state = self.initial_state()
        sequence = 0
        snapshot = await journal.load_snapshot(pid)
        if snapshot is not None and snapshot.version != self.state_version:
            snapshot = None  # of an older state shape: replay, and replace it at the next one
        if snapshot is not None:
            try:
                state = msgspec.msgpack.decode(snapshot.payload, type=self.state_type)  # type: ignore[assignment]
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise JournalCorrupt(f"{pid}: snapshot at {snapshot.sequence}: {exc}") from exc
            sequence = snapshot.sequence
        for stored in await journal.read_events(pid, sequence):
            if stored.sequence != sequence + 1:
                raise JournalCorrupt(
                    f"{pid}: expected event {sequence + 1}, read {stored.sequence}"
                )
            state = self.apply(state, self.codec.decode(stored))
            sequence = stored.sequence
        self.state = state
        self.sequence = sequence
        self._snapshot_sequence = snapshot.sequence if snapshot is not None else 0

    async def persist(self, *events: Any) -> None:
        """Make ``events`` durable, then apply them to :attr:`state`."""
        if not events:
            return
        state = self.state
        for event in events:
            state = self.apply(state, event)
        await self.persist_applied(state, *events)

    async def persist_applied(self, state: S, *events: Any) -> None:
        """Make ``events`` durable; ``state`` is what applying them gave.

        For an actor that had to apply its events while deciding (each
        decision in a batch sees the effect of the ones before it). The new
        state becomes :attr:`state` only once the events are durable; if the
        append fails, :attr:`state` is untouched.
        """
        if not events:
            return
        records = [self.codec.encode(event) for event in events]
        self.sequence = await self.system.journal.append(
            self.persistence_id, self.sequence, records
        )
        self.state = state
        every = self.snapshot_every_events or self.system.config.snapshot_every_events
        if self.sequence - self._snapshot_sequence >= every:
            try:
                await self.save_snapshot()
            except Exception as exc:
                # The events are durable: the command succeeded. Reporting the
                # snapshot's failure instead would have a caller retry it. The
                # next append (or passivation) tries the snapshot again.
                log.warning("%s: snapshot at %d not saved: %r", self.persistence_id,
                            self.sequence, exc)

    async def save_snapshot(self) -> None:
        if self.sequence == self._snapshot_sequence:
            return
        await self.system.journal.save_snapshot(
            Snapshot(
                persistence_id=self.persistence_id,
                sequence=self.sequence,
                version=self.state_version,
                payload=msgspec.msgpack.encode(self.state),
            )
        )
        self._snapshot_sequence = self.sequence

    async def on_passivate(self) -> None:
        await self.save_snapshot()

    def introspect(self) -> Any:
        return {"sequence": self.sequence, "state": msgspec.to_builtins(self.state)}
