"""The port the ledger writes its transfers through: :class:`TransferStore`.

Implementations: :class:`penpay.storage.transfers.PgTransferStore` (the ledger
of record, PostgreSQL) and :class:`penpay.storage.transfers_memory.InMemoryTransferStore`
(its twin for deterministic simulation). One contract test suite runs
against both.

The commit point of a linked group is one row in a *groups* table, written
in the same database transaction as the group's transfer rows. Recovery
decides the fate of a group it finds half-done by trying to insert the same
group id marked *aborted*: if the writer committed first, that insert finds
the committed row; if recovery wins, the writer's later commit finds the
aborted row and writes nothing. Exactly one of them wins, so no hold is ever
released for a group that commits, nor confirmed for one that does not.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec

from penpay.actors.ledger.chart import Chart
from penpay.actors.ledger.model import Transfer


class CommitOutcome(enum.StrEnum):
    COMMITTED = "committed"
    #: Recovery fenced the group first; nothing was written.
    ABORTED = "aborted"
    #: A transfer id, or a resolution of the same pending transfer, is already
    #: stored; nothing was written. Look the ids up to tell the caller why.
    DUPLICATE = "duplicate"


class TransferPage(msgspec.Struct, frozen=True):
    """Transfers in commit order, and the cursor to pass for the next page (None at the end)."""

    transfers: list[Transfer]
    next_cursor: int | None


class TransferStore(Protocol):
    async def register_accounts(self, chart: Chart) -> None:
        """Make every account of ``chart`` known to the store (idempotent).

        Raises :class:`~penpay.actors.ledger.errors.TransferStoreUnavailable`
        if an existing account has a different currency.
        """
        ...

    async def commit(self, group_id: str, transfers: Sequence[Transfer]) -> CommitOutcome:
        """Write every transfer of one linked group, or none, in one transaction.

        Raises :class:`~penpay.actors.ledger.errors.TransferStoreUnavailable`
        when the outcome is unknown; :meth:`resolve_groups` then decides it.
        """
        ...

    async def resolve_groups(self, group_ids: Sequence[str]) -> Mapping[str, bool]:
        """Whether each group committed; a group not committed yet is fenced as aborted."""
        ...

    async def get_transfers(self, ids: Sequence[str]) -> Mapping[str, Transfer]:
        """The stored transfers among ``ids`` (absent ids are left out)."""
        ...

    async def get_resolutions(self, pending_ids: Sequence[str]) -> Mapping[str, Transfer]:
        """For each pending id, the transfer that posted or voided it, if any."""
        ...

    async def account_transfers(
        self, account: str, *, after_cursor: int = 0, limit: int = 100
    ) -> TransferPage:
        """Transfers debiting or crediting ``account``, oldest first, a page at a time."""
        ...

    async def scan(self, *, after_cursor: int = 0, limit: int = 1000) -> TransferPage:
        """Every transfer in commit order, a page at a time (reconciliation)."""
        ...
