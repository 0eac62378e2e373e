"""Fault-injecting wrappers around a journal and a transfer store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from penpay.actors.ledger import CommitOutcome, Transfer, TransferPage, TransferStoreUnavailable
from penpay.actors.ledger.chart import Chart
from penpay.actors.ledger.store import TransferStore
from penpay.engine import EventRecord, Journal, JournalUnavailable, Snapshot, StoredEvent


class FlakyJournal:
    """Fails the next ``n`` appends of chosen persistence ids (the actor crashes and restarts)."""

    def __init__(self, inner: Journal) -> None:
        self.inner = inner
        self.fail_next: dict[str, int] = {}

    async def append(
        self, persistence_id: str, expected_sequence: int, events: Sequence[EventRecord]
    ) -> int:
        left = self.fail_next.get(persistence_id, 0)
        if left:
            self.fail_next[persistence_id] = left - 1
            raise JournalUnavailable(f"injected append failure for {persistence_id}")
        return await self.inner.append(persistence_id, expected_sequence, events)

    async def read_events(
        self, persistence_id: str, after_sequence: int = 0
    ) -> Sequence[StoredEvent]:
        return await self.inner.read_events(persistence_id, after_sequence)

    async def load_snapshot(self, persistence_id: str) -> Snapshot | None:
        return await self.inner.load_snapshot(persistence_id)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self.inner.save_snapshot(snapshot)


class FlakyStore:
    """Fails chosen commits (by call number): before writing, or after (outcome unknown)."""

    def __init__(self, inner: TransferStore) -> None:
        self.inner = inner
        self.commits = 0
        self.fail_before: set[int] = set()
        self.fail_after: set[int] = set()

    async def register_accounts(self, chart: Chart) -> None:
        await self.inner.register_accounts(chart)

    async def commit(self, group_id: str, transfers: Sequence[Transfer]) -> CommitOutcome:
        self.commits += 1
        number = self.commits
        if number in self.fail_before:
            raise TransferStoreUnavailable(f"injected failure before commit {number}")
        outcome = await self.inner.commit(group_id, transfers)
        if number in self.fail_after:
            raise TransferStoreUnavailable(f"injected failure after commit {number}")
        return outcome

    async def resolve_groups(self, group_ids: Sequence[str]) -> Mapping[str, bool]:
        return await self.inner.resolve_groups(group_ids)

    async def get_transfers(self, ids: Sequence[str]) -> Mapping[str, Transfer]:
        return await self.inner.get_transfers(ids)

    async def get_resolutions(self, pending_ids: Sequence[str]) -> Mapping[str, Transfer]:
        return await self.inner.get_resolutions(pending_ids)

    async def account_transfers(
        self, account: str, *, after_cursor: int = 0, limit: int = 100
    ) -> TransferPage:
        return await self.inner.account_transfers(account, after_cursor=after_cursor, limit=limit)

    async def scan(self, *, after_cursor: int = 0, limit: int = 1000) -> TransferPage:
        return await self.inner.scan(after_cursor=after_cursor, limit=limit)
