"""Journal benchmark: ``python run.py bench journal --json``.

1,000 event-sourced actors (real :class:`penpay.engine.EventSourcedActor`
subclasses in an :class:`ActorSystem`) persist one event per command on the
PostgreSQL journal, all at once, through the group-committing writer.
Figures, all durable (``synchronous_commit = on``):

- ``events_per_s``: events committed per second at full load;
- ``baseline_events_per_s``: the same actors, same driver and bridge, same
  run, with group commit off (one append per transaction);
- ``ratio``: events_per_s / baseline_events_per_s;
- ``p99_append_ms``: 99th percentile time of one ``journal.append`` in a
  second, paced phase at about half of ``events_per_s``;
- ``full_load_p99_append_ms``: the same percentile at full load.

Each phase builds a new actor system and activates every actor, then
collects garbage once (as ``run.py serve`` does after start-up), before
anything is timed.

Target: ``PENPAY_BENCH_DATABASE_URL`` if set, else an embedded PostgreSQL in
a temporary directory (deleted afterwards).
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import trio

from penpay.engine import (
    EngineConfig,
    EventCodec,
    EventRecord,
    EventSourcedActor,
    Snapshot,
    StoredEvent,
    open_actor_system,
)
from penpay.engine.tuning import tune_gc
from penpay.storage.journal import PgJournal, open_pg_journal
from penpay.storage.migrations import migrate
from penpay.storage.pg import Database, database

ACTORS = 1000
FULL_LOAD_S = 4.0
PACED_S = 4.0
BASELINE_S = 3.0


class Credited(msgspec.Struct, frozen=True, tag="bench.credited"):
    amount_cents: int
    reference: str


class BalanceState(msgspec.Struct, frozen=True):
    balance_cents: int = 0


class Credit(msgspec.Struct, frozen=True):
    amount_cents: int


class _Account(EventSourcedActor[BalanceState]):
    kind = "bench-account"
    codec: ClassVar[EventCodec] = EventCodec(Credited)
    state_type = BalanceState

    def initial_state(self) -> BalanceState:
        return BalanceState()

    def apply(self, state: BalanceState, event: Any) -> BalanceState:
        return BalanceState(state.balance_cents + event.amount_cents)

    async def receive(self, message: Any) -> Any:
        assert isinstance(message, Credit)
        await self.persist(Credited(message.amount_cents, reference="ref-0123456789"))
        return self.state.balance_cents


class _TimedJournal:
    """Wraps a journal to time every append (the figure the engine waits on)."""

    def __init__(self, inner: PgJournal) -> None:
        self.inner = inner
        self.latencies_s: list[float] = []
        self.recording = True

    async def append(
        self, persistence_id: str, expected_sequence: int, events: Sequence[EventRecord]
    ) -> int:
        started = time.perf_counter()
        result = await self.inner.append(persistence_id, expected_sequence, events)
        if self.recording:
            self.latencies_s.append(time.perf_counter() - started)
        return result

    async def read_events(
        self, persistence_id: str, after_sequence: int = 0
    ) -> Sequence[StoredEvent]:
        return await self.inner.read_events(persistence_id, after_sequence)

    async def load_snapshot(self, persistence_id: str) -> Snapshot | None:
        return await self.inner.load_snapshot(persistence_id)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self.inner.save_snapshot(snapshot)


def _p99_ms(samples: list[float]) -> float:
    if len(samples) < 2:
        return float("nan")
    return round(statistics.quantiles(samples, n=100)[98] * 1000, 2)


async def _phase(
    db: Database,
    *,
    key_prefix: str,
    duration_s: float,
    batch_events_max: int,
    batch_window_ms: float,
    rate_events_per_s: float | None = None,
    writer_connections: int = 1,
) -> tuple[float, float]:
    """Drive ACTORS actors for ``duration_s``; return (events/s, p99 append ms)."""
    config = EngineConfig(passivate_after_s=None, mailbox_capacity=16)
    async with open_pg_journal(
        db,
        batch_events_max=batch_events_max,
        batch_window_ms=batch_window_ms,
        writer_connections=writer_connections,
    ) as pg:
        journal = _TimedJournal(pg)
        async with open_actor_system(config=config, journal=journal) as system:
            refs = [system.ref(_Account, f"{key_prefix}-{n}") for n in range(ACTORS)]
            async with trio.open_nursery() as nursery:  # activate (recover) every actor
                for ref in refs:
                    nursery.start_soon(ref.ask, Credit(0))
            # A server collects its start-up garbage before it serves (tune_gc);
            # this phase's system is new, so do the same for what building it
            # left behind. Collections the load itself causes still land below.
            gc.collect()
            journal.latencies_s.clear()
            committed_before = pg.events_committed
            started = trio.current_time()
            deadline = started + duration_s
            interval_s = ACTORS / rate_events_per_s if rate_events_per_s else 0.0

            async def drive(index: int, ref: Any) -> None:
                next_at = started + interval_s * index / ACTORS
                while trio.current_time() < deadline:
                    if interval_s:
                        await trio.sleep_until(next_at)
                        next_at += interval_s
                    await ref.ask(Credit(1), timeout=60)

            async with trio.open_nursery() as nursery:
                for index, ref in enumerate(refs):
                    nursery.start_soon(drive, index, ref)
            elapsed_s = trio.current_time() - started
            journal.recording = False
            rate = (pg.events_committed - committed_before) / elapsed_s
            return rate, _p99_ms(journal.latencies_s)


async def _bench(url: str, batch_events_max: int, batch_window_ms: float) -> dict[str, object]:
    async with database(url, pool_size_max=8) as db:
        await migrate(db)
        await db.execute("TRUNCATE journal, snapshots")
        await db.execute("UPDATE journal_head SET last_position = 0")
        run = str(time.time_ns())
        baseline, _ = await _phase(
            db, key_prefix=f"base{run}", duration_s=BASELINE_S,
            batch_events_max=1, batch_window_ms=0.0,
        )
        full, full_p99 = await _phase(
            db, key_prefix=f"full{run}", duration_s=FULL_LOAD_S,
            batch_events_max=batch_events_max, batch_window_ms=batch_window_ms,
        )
        _, paced_p99 = await _phase(
            db, key_prefix=f"paced{run}", duration_s=PACED_S,
            batch_events_max=batch_events_max, batch_window_ms=batch_window_ms,
            rate_events_per_s=full / 2,
        )
    return {
        "events_per_s": round(full),
        "p99_append_ms": paced_p99,
        "baseline_events_per_s": round(baseline),
        "ratio": round(full / baseline, 1),
        "actors": ACTORS,
        "full_load_p99_append_ms": full_p99,
        "paced_events_per_s": round(full / 2),
        "batch_events_max": batch_events_max,
        "batch_window_ms": batch_window_ms,
    }


def run() -> dict[str, object]:
    tune_gc()  # as run.py serve does
    from penpay.config.settings import load_settings

    settings = load_settings()
    url = os.environ.get("PENPAY_BENCH_DATABASE_URL")
    if url:
        result = trio.run(
            _bench, url, settings.journal_batch_events_max, settings.journal_batch_window_ms
        )
        result["target"] = "PENPAY_BENCH_DATABASE_URL"
        return result
    from penpay.storage.embedded import start_embedded_postgres

    with tempfile.TemporaryDirectory(prefix="penpay-bench-") as scratch:
        server = start_embedded_postgres(Path(scratch), cleanup_mode="delete")
        try:
            result = trio.run(
                _bench,
                server.url,
                settings.journal_batch_events_max,
                settings.journal_batch_window_ms,
            )
        finally:
            server.close()
    result["target"] = "embedded pgserver"
    return result


if __name__ == "__main__":
    print(run())
