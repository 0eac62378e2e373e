"""The in-memory twin of the PostgreSQL transfer store, for deterministic simulation.

It outlives the actor systems that use it, so a simulated crash keeps the
rows and loses everything in memory. It enforces the same constraints as the
database (amount, distinct accounts, currency of both accounts, unique ids,
one resolution per pending transfer) and offers fault injection:
``fail_commit(group_id)`` may return ``"before"`` (the commit fails, nothing
written) or ``"after"`` (the commit lands, then the caller is told it failed:
an unknown outcome).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import trio

from penpay.actors.ledger.chart import Chart
from penpay.actors.ledger.errors import TransferRowRefused, TransferStoreUnavailable
from penpay.actors.ledger.model import AMOUNT_CENTS_MAX, Transfer
from penpay.actors.ledger.store import CommitOutcome, TransferPage
from penpay.money import Currency
from penpay.text import storable_text

FailurePoint = Literal["before", "after"] | None


def check_row(transfer: Transfer, accounts: Mapping[str, Currency]) -> None:
    """The database's CHECK and foreign-key constraints, in Python."""
    t = transfer
    if t.amount_cents <= 0:
        raise TransferRowRefused(f"{t.id}: amount_cents must be > 0")
    if t.amount_cents > AMOUNT_CENTS_MAX:
        raise TransferRowRefused(f"{t.id}: amount_cents is out of range for bigint")
    if not storable_text(t.code) or not storable_text(t.transaction_id or ""):
        raise TransferRowRefused(f"{t.id}: text PostgreSQL cannot store (NUL or a surrogate)")
    if t.debit_account == t.credit_account:
        raise TransferRowRefused(f"{t.id}: debit and credit account are the same")
    for account in (t.debit_account, t.credit_account):
        if accounts.get(account) is not t.currency:
            raise TransferRowRefused(f"{t.id}: no {t.currency} account {account!r}")
    if t.kind.resolves_pending != (t.pending_id is not None):
        raise TransferRowRefused(f"{t.id}: pending_id does not match kind {t.kind}")


class InMemoryTransferStore:
    """:class:`~penpay.actors.ledger.store.TransferStore` in dicts."""

    def __init__(self, *, latency_s: float = 0.0) -> None:
        #: Simulated round-trip time of every call (trio time; use a mock clock).
        self.latency_s = latency_s
        self._accounts: dict[str, Currency] = {}
        self._rows: list[Transfer] = []
        self._by_id: dict[str, Transfer] = {}
        self._resolutions: dict[str, Transfer] = {}
        self._groups: dict[str, bool] = {}
        self.fail_commit: Callable[[str], FailurePoint] | None = None
        self.fail_reads = False
        #: Commits that wrote rows; for tests.
        self.commits = 0

    async def register_accounts(self, chart: Chart) -> None:
        await trio.lowlevel.checkpoint()
        for code, spec in chart.items():
            known = self._accounts.get(code)
            if known is not None and known is not spec.currency:
                raise TransferStoreUnavailable(
                    f"account {code!r} is stored as {known}, the chart says {spec.currency}"
                )
            self._accounts[code] = spec.currency

    async def commit(self, group_id: str, transfers: Sequence[Transfer]) -> CommitOutcome:
        await self._wait()
        failure = self.fail_commit(group_id) if self.fail_commit is not None else None
        if failure == "before":
            raise TransferStoreUnavailable(f"injected failure before committing group {group_id}")
        outcome = self._commit(group_id, transfers)
        if failure == "after":
            raise TransferStoreUnavailable(f"injected failure after committing group {group_id}")
        return outcome

    def _commit(self, group_id: str, transfers: Sequence[Transfer]) -> CommitOutcome:
        assert transfers, "a group holds at least one transfer"
        for t in transfers:
            check_row(t, self._accounts)
        if self._groups.get(group_id):
            return CommitOutcome.COMMITTED  # sent again: its first commit's answer was lost
        ids = [t.id for t in transfers]
        pending = [t.pending_id for t in transfers if t.pending_id is not None]
        if (
            len(set(ids)) != len(ids)
            or len(set(pending)) != len(pending)
            or any(i in self._by_id for i in ids)
            or any(p in self._resolutions for p in pending)
        ):
            return CommitOutcome.DUPLICATE
        if group_id in self._groups:
            return CommitOutcome.ABORTED  # fenced by recovery
        self._groups[group_id] = True
        for t in transfers:
            self._rows.append(t)
            self._by_id[t.id] = t
            if t.pending_id is not None:
                self._resolutions[t.pending_id] = t
        self.commits += 1
        return CommitOutcome.COMMITTED

    async def resolve_groups(self, group_ids: Sequence[str]) -> Mapping[str, bool]:
        await self._read()
        return {g: self._groups.setdefault(g, False) for g in group_ids}

    async def get_transfers(self, ids: Sequence[str]) -> Mapping[str, Transfer]:
        await self._read()
        return {i: self._by_id[i] for i in ids if i in self._by_id}

    async def get_resolutions(self, pending_ids: Sequence[str]) -> Mapping[str, Transfer]:
        await self._read()
        return {p: self._resolutions[p] for p in pending_ids if p in self._resolutions}

    async def account_transfers(
        self, account: str, *, after_cursor: int = 0, limit: int = 100
    ) -> TransferPage:
        await self._read()
        found: list[Transfer] = []
        cursor = after_cursor
        for index in range(after_cursor, len(self._rows)):
            t = self._rows[index]
            if account in (t.debit_account, t.credit_account):
                found.append(t)
                cursor = index + 1
                if len(found) == limit:
                    return TransferPage(found, cursor)
        return TransferPage(found, None)

    async def scan(self, *, after_cursor: int = 0, limit: int = 1000) -> TransferPage:
        await self._read()
        rows = self._rows[after_cursor : after_cursor + limit]
        return TransferPage(list(rows), after_cursor + len(rows) if len(rows) == limit else None)

    def all_transfers(self) -> list[Transfer]:
        """Every row in commit order (for test assertions)."""
        return list(self._rows)

    def transfers_after(self, count: int) -> list[Transfer]:
        """The rows committed after the first ``count`` (for checkers that follow along)."""
        return self._rows[count:]

    async def _wait(self) -> None:
        if self.latency_s:
            await trio.sleep(self.latency_s)
        else:
            await trio.lowlevel.checkpoint()

    async def _read(self) -> None:
        await self._wait()
        if self.fail_reads:
            raise TransferStoreUnavailable("injected read failure")
