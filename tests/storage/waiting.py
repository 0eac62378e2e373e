"""Waiting on database-side conditions (there is no event to await for them)."""

from __future__ import annotations

import trio

from penpay.storage.journal import WRITER_APPLICATION_NAME
from penpay.storage.pg import Database

POLL_S = 0.005  # how often to re-check a condition being waited for


async def wait_until_writer_blocked(db: Database) -> int:
    """The journal writer's backend pid, once its batch waits on the journal_head lock."""
    while True:
        pid = await db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
            "AND datname = current_database() AND wait_event_type = 'Lock'",
            WRITER_APPLICATION_NAME,
        )
        if pid is not None:
            return int(pid)
        await trio.sleep(POLL_S)
