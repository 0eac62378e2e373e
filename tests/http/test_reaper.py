"""The idempotency reaper rides out a database outage instead of stopping the server.

It shares its nursery with the HTTP server and the actors: one failed run
(PostgreSQL restarting, a failover) ended the whole process.
"""

from __future__ import annotations

from datetime import datetime

import trio
from trio.testing import MockClock

from penpay.engine.clock import Clock
from penpay.http.idempotency import run_reaper
from penpay.storage.idempotency_keys import MemoryIdempotencyStore
from penpay.storage.pg import ConnectionLost


class FlakyStore(MemoryIdempotencyStore):
    """Down for its first ``down`` reaps."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down, self.reaps = down, 0

    async def reap(self, *, finished_before: datetime) -> int:
        self.reaps += 1
        if self.reaps <= self.down:
            raise ConnectionLost("the database is restarting")
        return await super().reap(finished_before=finished_before)


async def test_a_failed_reap_waits_for_the_next_run(autojump_clock: MockClock) -> None:
    store = FlakyStore(down=2)
    with trio.move_on_after(3 * 3600 + 1):
        await run_reaper(store, Clock(), interval_s=3600)  # must not raise
    assert store.reaps == 4  # at 0 s and 1 h (down), then at 2 h and 3 h
