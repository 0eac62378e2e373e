"""The outbox relay: committed journal events -> the Redis stream ``penpay:events``.

The journal is the outbox: every committed event has a global ``position``,
assigned in commit order (see migration 0001), so "everything after position
P" is a stable, gap-free question. The relay reads a page of events after its
cursor, XADDs them to the stream in one pipeline, and only then advances the
cursor in PostgreSQL (table ``outbox_cursor``). A crash between the two
publishes that page again on restart: delivery is **at least once**, and
consumers deduplicate on ``(persistence_id, sequence)`` or ``position``.
Only committed events are ever read, so nothing uncommitted is published.

Run exactly one relay per cursor name: two relays would each publish every
event (still at least once, but twice as noisy).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import coredis
import trio

from penpay.engine.errors import JournalUnavailable
from penpay.engine.persistence import StoredEvent
from penpay.storage.journal import PgJournal
from penpay.storage.pg import Database, DatabaseError

log = logging.getLogger("penpay.storage.outbox")

STREAM_KEY = "penpay:events"
CURSOR_NAME = "redis:" + STREAM_KEY


def redis_from_url(url: str) -> coredis.Redis[bytes]:
    """A coredis client for ``redis://host:port/db`` or ``unix:///path/to.sock``.

    Use it as ``async with client:`` (coredis 6 opens its pool there).
    """
    return coredis.Redis.from_url(url)


class OutboxRelay:
    """Publishes committed events in position order, at least once."""

    def __init__(
        self,
        db: Database,
        journal: PgJournal,
        redis: coredis.Redis[bytes],
        *,
        stream_key: str = STREAM_KEY,
        cursor_name: str | None = None,
        page_events_max: int = 500,
        poll_interval_ms: float = 200.0,
        stream_length_max: int = 1_000_000,
        retry_backoff_max_s: float = 5.0,
    ) -> None:
        assert page_events_max >= 1 and poll_interval_ms > 0
        self._db = db
        self._journal = journal
        self._redis = redis
        self.stream_key = stream_key
        self.cursor_name = cursor_name or "redis:" + stream_key
        self.page_events_max = page_events_max
        self.poll_interval_ms = poll_interval_ms
        self.stream_length_max = stream_length_max
        self.retry_backoff_max_s = retry_backoff_max_s
        #: The last position published and recorded.
        self.cursor = 0
        self._progress = trio.Event()

    async def load_cursor(self) -> int:
        await self._db.execute(
            "INSERT INTO outbox_cursor (name, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            self.cursor_name,
        )
        self.cursor = int(
            await self._db.fetchval(
                "SELECT position FROM outbox_cursor WHERE name = $1", self.cursor_name
            )
        )
        return self.cursor

    async def _publish(self, events: Sequence[StoredEvent]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(
                    self.stream_key,
                    {
                        "persistence_id": event.persistence_id,
                        "sequence": event.sequence,
                        "type": event.type,
                        "version": event.version,
                        "position": event.position,
                        "payload": event.payload,
                    },
                    trim_strategy=coredis.PureToken.MAXLEN,
                    threshold=self.stream_length_max,
                    trim_operator=coredis.PureToken.APPROXIMATELY,
                )

    async def relay_once(self) -> int:
        """Publish one page after the cursor; return how many events it held."""
        events = await self._journal.read_all(self.cursor, self.page_events_max)
        if not events:
            return 0
        await self._publish(events)
        last = events[-1].position
        await self._db.execute(
            "UPDATE outbox_cursor SET position = $2 WHERE name = $1 AND position < $2",
            self.cursor_name,
            last,
        )
        self.cursor = last
        self._progress.set()
        self._progress = trio.Event()
        return len(events)

    async def wait_published(self, position: int) -> None:
        """Return once everything up to ``position`` has been published."""
        while self.cursor < position:
            await self._progress.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Relay forever: drain, then wait for a commit or the poll interval.

        Failures (database or Redis) are logged and retried with back-off;
        the cursor only moves after a successful publish.
        """
        await self.load_cursor()
        log.info("outbox relay %s starting after position %d", self.cursor_name, self.cursor)
        task_status.started()
        backoff_s = 0.05
        while True:
            try:
                published = await self.relay_once()
                backoff_s = 0.05
            except (
                DatabaseError, JournalUnavailable, coredis.exceptions.RedisError, OSError
            ) as exc:
                log.warning("outbox relay failed (%s); retrying in %.2f s", exc, backoff_s)
                await trio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, self.retry_backoff_max_s)
                continue
            if published < self.page_events_max:
                with trio.move_on_after(self.poll_interval_ms / 1000):
                    await self._journal.wait_for_commit()
