"""Planner statistics that keep up with tables a long-lived writer fills.

Why this exists: PostgreSQL plans each foreign-key check (and each statement
of a PL/pgSQL function) once per connection and keeps that plan until the
statistics of a table it reads change. A writer connection opened on a
fresh database plans its checks while the tables hold a handful of rows, so
a sequential scan is the cheapest plan, and it keeps that plan while the
table grows: every check then reads the whole table, and commit time grows
with the ledger. Measured on ``bench ledger``: a transfer-store batch went
from 8 ms to 45 ms within 80,000 transfers. Autovacuum's ``ANALYZE``
eventually invalidates the plan, but only once its own thresholds and
naptime allow.

:class:`GrowthAnalyzer` runs ``ANALYZE`` itself each time the writer has
added as many rows as the table held at the previous analysis (at least
``min_rows``): a doubling schedule, so a ledger of a million rows is
analysed about ten times in the life of a process, never on every batch.
It runs on a pool connection, beside the writer, so no commit waits for it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import trio

from penpay.storage.pg import Database, DatabaseError, QueryFailed

log = logging.getLogger("penpay.storage.statistics")

#: Rows a writer adds before its first ``ANALYZE`` on a near-empty table.
ANALYZE_MIN_ROWS = 1000
#: SQLSTATE of "must be owner of table": the role may not analyse; stop asking.
_INSUFFICIENT_PRIVILEGE = "42501"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


class GrowthAnalyzer:
    """Analyse ``tables`` whenever the writer has doubled the first of them.

    The writer calls :meth:`added` after each commit (it never waits); the
    analysis itself happens in :meth:`run`, a task beside the writer.
    """

    def __init__(
        self, db: Database, tables: Sequence[str], *, min_rows: int = ANALYZE_MIN_ROWS
    ) -> None:
        if not tables or not all(_IDENTIFIER.match(t) for t in tables):
            raise ValueError(f"table names must be plain identifiers: {tables!r}")
        if min_rows < 1:
            raise ValueError(f"min_rows must be positive, not {min_rows}")
        self._db = db
        self.tables = tuple(tables)
        self.min_rows = min_rows
        #: Rows the first table is believed to hold as of the last analysis.
        self._rows_at_analysis: int | None = None
        self._rows_since = 0
        self._due = trio.Event()
        #: How many times :meth:`run` has analysed; for tests and metrics.
        self.analyses = 0
        self._analysed = trio.Event()

    @property
    def _threshold(self) -> int | None:
        if self._rows_at_analysis is None:
            return None
        return max(self.min_rows, self._rows_at_analysis)

    def added(self, rows: int) -> bool:
        """The writer committed ``rows`` more rows to the first table; True if that makes
        an analysis due (it then runs in :meth:`run`, soon after)."""
        self._rows_since += rows
        threshold = self._threshold
        if threshold is None or self._rows_since < threshold:
            return False
        self._due.set()
        return True

    async def run(self) -> None:
        """Analyse when due, for ever (cancel to stop)."""
        try:
            table_rows = await self._estimated_rows()
        except DatabaseError as exc:
            log.warning("cannot read the size of %s (%s); assuming empty", self.tables[0], exc)
            table_rows = 0
        self._rows_at_analysis = table_rows
        self.added(0)
        statement = "ANALYZE " + ", ".join(self.tables)
        while True:
            await self._due.wait()
            self._due = trio.Event()
            rows = self._rows_since
            try:
                await self._db.execute(statement)
            except DatabaseError as exc:
                if isinstance(exc, QueryFailed) and exc.sqlstate == _INSUFFICIENT_PRIVILEGE:
                    log.warning("%s refused (%s); leaving statistics to autovacuum", statement, exc)
                    return
                log.warning("%s failed (%s); trying again after the next batch", statement, exc)
                continue
            table_rows += rows
            self._rows_at_analysis = table_rows
            self._rows_since -= rows
            self.analyses += 1
            self._analysed.set()
            self._analysed = trio.Event()

    async def wait_analyses(self, count: int) -> None:
        """Return once :meth:`run` has analysed ``count`` times in all."""
        while self.analyses < count:
            await self._analysed.wait()

    async def _estimated_rows(self) -> int:
        estimate = await self._db.fetchval(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::regclass",
            self.tables[0],
        )
        return int(estimate or 0)
