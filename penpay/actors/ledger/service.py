"""The :class:`Ledger` service that sagas call: linked groups, all or nothing, across crashes.

Protocol of :meth:`Ledger.create_transfers` (see ``doc/ledger.md`` for the
crash-safety argument):

1. validate purely (the chart, the transfer fields, the pending transfer a
   post/void names);
2. ask every affected account actor to **reserve** its legs of the group
   (one message per account, all legs or none); if one refuses, **release**
   the others and report the refusal;
3. write every row of the group, and the group's commit marker, in ONE
   database transaction: the commit point;
4. tell the accounts to **confirm**.

A group made only of posts/voids of pending transfers skips step 2: it is
committed at once (the store admits one resolution per pending transfer, and
neither can break a flag), then applied on its accounts.

Idempotency needs no read on the happy path: resubmitting a stored id fails
at step 2 or 3 (its money is already held or its id is taken), and only
then does the service read the store to answer ``exists`` or
``exists_with_different_<field>``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import msgspec
import trio

from penpay.actors.ledger.account import (
    ApplyResolutions,
    Confirm,
    GetBalance,
    GetHeldGroups,
    GetOpenPending,
    LedgerAccount,
    Leg,
    Release,
    Reserve,
)
from penpay.actors.ledger.chart import DEFAULT_CHART, Chart, Side
from penpay.actors.ledger.errors import (
    AccountRefused,
    LedgerOutcomeUnknown,
    LedgerUnavailable,
    TransferRowRefused,
    TransferStoreUnavailable,
)
from penpay.actors.ledger.model import (
    Balance,
    ResultCode,
    Transfer,
    TransferKind,
    TrialBalanceLine,
    check_against_pending,
    compare_existing,
    replay_balances,
    resolution_of,
    trial_balance,
    validate_group,
)
from penpay.actors.ledger.store import CommitOutcome, TransferPage, TransferStore
from penpay.engine import ActorRef, ActorSystem, EngineError, MailboxFull, SupervisionPolicy
from penpay.money import Currency

log = logging.getLogger("penpay.ledger")

#: Open pending transfers remembered so a post/void needs no store read.
PENDING_CACHE_ENTRIES_MAX = 100_000
#: Rows read per store round trip when reconciling.
RECONCILE_PAGE_ROWS = 5_000
#: How long one group may take from its first hold to its last confirm, at most:
#: a net under the steps' own timeouts, short enough not to hold up a shutdown long.
APPLY_DEADLINE_S = 60.0


class TransferResult(msgspec.Struct, frozen=True):
    transfer_id: str
    code: ResultCode


class GroupResult(msgspec.Struct, frozen=True):
    """One code per transfer, in order; ``group_id`` is set when this call committed."""

    results: tuple[TransferResult, ...]
    group_id: str | None = None

    @property
    def ok(self) -> bool:
        """True when every transfer is stored (``ok`` now or ``exists`` from before)."""
        return all(r.code.succeeded for r in self.results)

    @property
    def codes(self) -> list[ResultCode]:
        return [r.code for r in self.results]


class AccountDrift(msgspec.Struct, frozen=True):
    account: str
    from_store: Balance
    from_actor: Balance


class ReconcileReport(msgspec.Struct, frozen=True):
    """What :meth:`Ledger.reconcile` found; ``clean`` when nothing drifted."""

    transfers_scanned: int
    drift: list[AccountDrift]
    held_groups: dict[str, list[str]]
    trial_balance: dict[Currency, TrialBalanceLine]

    @property
    def clean(self) -> bool:
        return (
            not self.drift
            and not self.held_groups
            and all(line.balanced for line in self.trial_balance.values())
        )


def _result(transfers: Sequence[Transfer], codes: Sequence[ResultCode]) -> GroupResult:
    return GroupResult(
        tuple(TransferResult(t.id, code) for t, code in zip(transfers, codes, strict=True))
    )


def _failed(transfers: Sequence[Transfer], codes: Sequence[ResultCode]) -> GroupResult:
    """Failing transfers keep their code; the rest of a linked group fail with it."""
    return _result(
        transfers,
        [ResultCode.LINKED_EVENT_FAILED if code is ResultCode.OK else code for code in codes],
    )


def _legs(transfers: Sequence[Transfer], pending: Mapping[str, Transfer]) -> dict[str, list[Leg]]:
    by_account: dict[str, list[Leg]] = {}
    for t in transfers:
        resolved = pending[t.pending_id] if t.pending_id is not None else None
        for account, side in ((t.debit_account, Side.DEBIT), (t.credit_account, Side.CREDIT)):
            by_account.setdefault(account, []).append(
                Leg(
                    transfer_id=t.id,
                    kind=t.kind,
                    side=side,
                    amount_cents=t.amount_cents,
                    pending_id=t.pending_id,
                    pending_amount_cents=resolved.amount_cents if resolved else 0,
                    pending_group=resolved.linked_group if resolved else None,
                )
            )
    return by_account


class Ledger:
    """Double-entry ledger: account actors in ``system``, transfer rows in ``store``.

    Call :meth:`start` once before use; it registers the chart with the store
    and resolves holds a previous process left behind.
    """

    def __init__(
        self,
        system: ActorSystem,
        store: TransferStore,
        chart: Chart = DEFAULT_CHART,
        *,
        ask_timeout_s: float | None = None,
        pending_cache_entries_max: int = PENDING_CACHE_ENTRIES_MAX,
    ) -> None:
        self.system = system
        self.store = store
        self.chart = chart
        self.ask_timeout_s = ask_timeout_s
        self.pending_cache_entries_max = pending_cache_entries_max
        self._pending_cache: OrderedDict[str, Transfer] = OrderedDict()
        #: Groups whose commit outcome could not be read: the accounts and legs to
        #: settle once the store answers (see :meth:`settle_unknown_groups`).
        self._unknown: dict[str, Mapping[str, list[Leg]]] = {}
        system.register(
            LedgerAccount,
            lambda: LedgerAccount(chart, store),
            supervision=SupervisionPolicy.persistent(),
        )

    async def start(self, *, recover: bool = True) -> None:
        """Register the chart's accounts with the store, then (by default) :meth:`recover`."""
        await self.store.register_accounts(self.chart)
        if recover:
            await self.recover()

    # ------------------------------------------------------------- commands

    async def create_transfers(self, group: Sequence[Transfer]) -> GroupResult:
        """Apply a linked group of transfers: all of them, or none.

        Returns one :class:`ResultCode` per transfer. Raises
        :class:`LedgerUnavailable` when nothing was applied for a transient
        reason, and :class:`LedgerOutcomeUnknown` when the store could not
        say whether the group committed; retrying with the same ids is safe
        in both cases.
        """
        transfers = list(group)
        if not transfers:
            raise ValueError("create_transfers needs at least one transfer")
        codes = validate_group(transfers, self.chart)
        if any(code is not ResultCode.OK for code in codes):
            return _failed(transfers, codes)
        pending = await self._pending_of(transfers)
        codes = [
            check_against_pending(t, pending.get(t.pending_id), None)
            if t.pending_id is not None
            else ResultCode.OK
            for t in transfers
        ]
        if any(code is not ResultCode.OK for code in codes):
            return await self._explain(transfers, codes)

        now_ms = self.system.clock.now_ms()
        group_id = str(self.system.entropy.uuid7(now_ms))
        stamped = [
            msgspec.structs.replace(t, timestamp_ms=now_ms, linked_group=group_id)
            for t in transfers
        ]
        legs = _legs(stamped, pending)
        # From the first hold to the last confirm the group must run to its end:
        # a caller cancelled half-way (a client that hung up) would leave holds
        # that count against the accounts' flags, or rows the accounts never
        # apply. Every step is bounded by its own timeout; the deadline is a net.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + APPLY_DEADLINE_S
            if all(t.pending_id is not None for t in transfers):
                return await self._commit_resolutions(transfers, stamped, group_id, legs)
            return await self._hold_commit_confirm(transfers, stamped, group_id, legs)
        self._unknown[group_id] = legs  # the settler confirms or releases what it holds
        raise LedgerOutcomeUnknown(
            f"group {group_id} did not finish within {APPLY_DEADLINE_S:g} s; it is settled "
            "once the store answers"
        )

    async def _hold_commit_confirm(
        self,
        transfers: Sequence[Transfer],
        stamped: Sequence[Transfer],
        group_id: str,
        legs: Mapping[str, list[Leg]],
    ) -> GroupResult:
        """Hold on every account, commit the rows, then confirm (or release) the holds."""
        accounts = sorted(legs)
        asked: list[str] = []
        try:
            for account in accounts:
                asked.append(account)
                await self._ref(account).ask(
                    Reserve(group_id, tuple(legs[account])), timeout=self.ask_timeout_s
                )
        except AccountRefused as refusal:
            await self._tell_all(asked[:-1], Release(group_id))
            codes = [
                refusal.code if t.id == refusal.transfer_id else ResultCode.OK for t in transfers
            ]
            return await self._explain(transfers, codes)
        except EngineError as exc:
            # Whether the last ask reserved is unknown; releasing is idempotent.
            await self._tell_all(asked, Release(group_id))
            raise LedgerUnavailable(f"group {group_id}: reserving failed: {exc}") from exc

        try:
            outcome = await self._commit(group_id, stamped, legs)
        except TransferRowRefused:
            await self._tell_all(accounts, Release(group_id))  # the server refused: nothing written
            raise
        if outcome is CommitOutcome.COMMITTED:
            await self._tell_all(accounts, Confirm(group_id))
            self._remember(stamped)
            return GroupResult(
                tuple(TransferResult(t.id, ResultCode.OK) for t in transfers), group_id
            )
        await self._tell_all(accounts, Release(group_id))
        if outcome is CommitOutcome.ABORTED:
            raise LedgerUnavailable(f"group {group_id} was aborted by recovery; nothing applied")
        return await self._explain(transfers, [ResultCode.ID_IN_FLIGHT] * len(transfers))

    async def _commit_resolutions(
        self,
        transfers: Sequence[Transfer],
        stamped: Sequence[Transfer],
        group_id: str,
        legs: Mapping[str, list[Leg]],
    ) -> GroupResult:
        """A group of posts/voids only: commit first, then apply on the accounts.

        No hold is needed: a post or void can never break a flag, and the
        store admits one resolution per pending transfer, so the commit alone
        decides. An account that misses the apply (crash) finds the
        resolution in the store when it is next activated, or at
        :meth:`recover`.
        """
        accounts = sorted(legs)
        outcome = await self._commit(group_id, stamped, legs)
        if outcome is CommitOutcome.COMMITTED:
            for account in accounts:
                await self._tell(account, ApplyResolutions(group_id, tuple(legs[account])))
            self._remember(stamped)
            return GroupResult(
                tuple(TransferResult(t.id, ResultCode.OK) for t in transfers), group_id
            )
        if outcome is CommitOutcome.ABORTED:
            raise LedgerUnavailable(f"group {group_id} was aborted by recovery; nothing applied")
        return await self._explain(transfers, [ResultCode.ID_IN_FLIGHT] * len(transfers))

    async def post_pending(
        self,
        transfer_id: str,
        pending_id: str,
        *,
        amount_cents: int | None = None,
        code: str = "",
        transaction_id: str | None = None,
    ) -> GroupResult:
        """Post a pending transfer, fully or for ``amount_cents`` (the rest is released)."""
        return await self._resolve(
            transfer_id, pending_id, False, amount_cents, code, transaction_id
        )

    async def void_pending(
        self,
        transfer_id: str,
        pending_id: str,
        *,
        code: str = "",
        transaction_id: str | None = None,
    ) -> GroupResult:
        """Release a pending transfer entirely."""
        return await self._resolve(transfer_id, pending_id, True, None, code, transaction_id)

    async def _resolve(
        self,
        transfer_id: str,
        pending_id: str,
        void: bool,
        amount_cents: int | None,
        code: str,
        transaction_id: str | None,
    ) -> GroupResult:
        pending = (await self._pending_of_ids([pending_id])).get(pending_id)
        if pending is None:
            return GroupResult(
                (TransferResult(transfer_id, ResultCode.PENDING_TRANSFER_NOT_FOUND),)
            )
        transfer = resolution_of(
            pending,
            transfer_id=transfer_id,
            void=void,
            amount_cents=amount_cents,
            code=code,
            transaction_id=transaction_id,
        )
        return await self.create_transfers([transfer])

    async def recover(self, accounts: Iterable[str] | None = None) -> int:
        """Resolve every hold still reserved from the store; returns how many groups.

        Activating an account already resolves what it recovered from its
        journal; this also covers live accounts whose service call gave up
        (:class:`LedgerOutcomeUnknown`). Meant for start-up and for operators:
        a group whose commit is still in flight is fenced as aborted, and
        its caller is told :class:`LedgerUnavailable`.
        """
        resolved = 0
        for account in accounts if accounts is not None else self.chart:
            held: list[str] = await self._ref(account).ask(
                GetHeldGroups(), timeout=self.ask_timeout_s
            )
            if held:
                outcomes = await self.store.resolve_groups(held)
                for group_id, committed in outcomes.items():
                    message = Confirm(group_id) if committed else Release(group_id)
                    await self._ref(account).tell(message)
                    resolved += 1
            # Posts/voids committed without a hold whose apply never arrived.
            open_ids: list[str] = await self._ref(account).ask(
                GetOpenPending(), timeout=self.ask_timeout_s
            )
            if not open_ids:
                continue
            found = await self.store.get_resolutions(open_ids)
            if not found:
                continue
            pending = await self.store.get_transfers(list(found))
            by_group: dict[str, list[Leg]] = {}
            for t in found.values():
                for leg in _legs([t], pending).get(account, ()):
                    by_group.setdefault(t.linked_group or t.id, []).append(leg)
            for group_id, group_legs in by_group.items():
                await self._ref(account).tell(ApplyResolutions(group_id, tuple(group_legs)))
                resolved += 1
        return resolved

    # -------------------------------------------------------------- queries

    async def balance(self, account: str) -> Balance:
        if account not in self.chart:
            raise KeyError(f"no account {account!r} in the chart")
        balance: Balance = await self._ref(account).ask(GetBalance(), timeout=self.ask_timeout_s)
        return balance

    async def balances(self, accounts: Iterable[str] | None = None) -> dict[str, Balance]:
        codes = list(accounts) if accounts is not None else list(self.chart)
        return {code: await self.balance(code) for code in codes}

    async def account_transfers(
        self, account: str, *, after_cursor: int = 0, limit: int = 100
    ) -> TransferPage:
        """Transfers of one account, oldest first; pass ``next_cursor`` back for the next page."""
        return await self.store.account_transfers(account, after_cursor=after_cursor, limit=limit)

    async def trial_balance(self) -> dict[Currency, TrialBalanceLine]:
        """Per currency, Σ debits and Σ credits over every account's actor state."""
        return trial_balance(self.chart, await self.balances())

    async def reconcile(self) -> ReconcileReport:
        """Recompute every balance from the transfer rows and compare with the actors.

        Run it when the ledger is quiet (or after :meth:`recover`): a group
        committed a moment ago may not be confirmed in its actors yet and
        would show as drift.
        """
        rows: list[Transfer] = []
        cursor: int | None = 0
        while cursor is not None:
            page = await self.store.scan(after_cursor=cursor, limit=RECONCILE_PAGE_ROWS)
            rows.extend(page.transfers)
            cursor = page.next_cursor
        from_store = replay_balances(rows)
        from_actors = await self.balances()
        drift = [
            AccountDrift(code, from_store.get(code, Balance()), actor)
            for code, actor in from_actors.items()
            if from_store.get(code, Balance()) != actor
        ]
        drift.extend(
            AccountDrift(code, balance, Balance())
            for code, balance in from_store.items()
            if code not in from_actors
        )
        held: dict[str, list[str]] = {}
        for code in self.chart:
            groups = await self._ref(code).ask(GetHeldGroups(), timeout=self.ask_timeout_s)
            if groups:
                held[code] = groups
        return ReconcileReport(
            transfers_scanned=len(rows),
            drift=drift,
            held_groups=held,
            trial_balance=trial_balance(self.chart, from_actors),
        )

    # -------------------------------------------------------------- helpers

    def _ref(self, account: str) -> ActorRef:
        return self.system.ref(LedgerAccount, account)

    async def _tell_all(
        self, accounts: Iterable[str], message: Confirm | Release
    ) -> None:
        """Best effort: an account that cannot take it resolves the hold on its next activation.

        (The caller's shield keeps a cancelled caller from stopping halfway.)
        """
        for account in accounts:
            await self._tell(account, message)

    async def _tell(self, account: str, message: Confirm | Release | ApplyResolutions) -> None:
        ref = self._ref(account)
        try:
            try:
                ref.tell_nowait(message)  # no schedule point unless the mailbox is full
            except MailboxFull:
                await ref.tell(message)  # back-pressure
        except EngineError as exc:
            log.warning("ledger account %s did not take %r: %s", account, message, exc)

    async def _commit(
        self, group_id: str, stamped: Sequence[Transfer], legs: Mapping[str, list[Leg]]
    ) -> CommitOutcome:
        """Commit the group's rows; an unconfirmed commit is read back from the store."""
        try:
            return await self.store.commit(group_id, stamped)
        except TransferStoreUnavailable as exc:
            return await self._decide_unknown(group_id, legs, exc)

    async def _decide_unknown(
        self, group_id: str, legs: Mapping[str, list[Leg]], exc: TransferStoreUnavailable
    ) -> CommitOutcome:
        """The commit's outcome is unknown: fence the group, then read what happened."""
        try:
            outcomes = await self.store.resolve_groups([group_id])
        except TransferStoreUnavailable as again:
            self._unknown[group_id] = legs
            raise LedgerOutcomeUnknown(
                f"group {group_id}: commit failed ({exc}) and its outcome cannot be read "
                f"({again}); its holds stay on {sorted(legs)} until the store answers"
            ) from again
        return CommitOutcome.COMMITTED if outcomes[group_id] else CommitOutcome.ABORTED

    async def settle_unknown_groups(self) -> int:
        """Settle the groups whose commit outcome could not be read; how many were.

        Their holds count against the accounts' flags, and a retry of the same
        ids is refused as in flight while they stand: waiting for a restart's
        :meth:`recover` could refuse a hot account's payouts for hours. The
        store is asked again (which fences the group if its write never
        landed); holds are then confirmed or released, resolutions applied.
        Raises :class:`TransferStoreUnavailable` if the store still cannot say.
        """
        if not self._unknown:
            return 0
        groups = list(self._unknown)
        outcomes = await self.store.resolve_groups(groups)
        with trio.CancelScope(shield=True):
            for group_id in groups:
                legs = self._unknown.pop(group_id)
                if all(leg.pending_id is not None for held in legs.values() for leg in held):
                    if outcomes[group_id]:  # posts and voids: nothing held, apply them
                        for account, held in sorted(legs.items()):
                            await self._tell(account, ApplyResolutions(group_id, tuple(held)))
                    continue
                message = Confirm(group_id) if outcomes[group_id] else Release(group_id)
                await self._tell_all(sorted(legs), message)
        return len(groups)

    def _remember(self, transfers: Sequence[Transfer]) -> None:
        cache = self._pending_cache
        for t in transfers:
            if t.kind is TransferKind.PENDING:
                cache[t.id] = t
                if len(cache) > self.pending_cache_entries_max:
                    cache.popitem(last=False)
            elif t.pending_id is not None:
                cache.pop(t.pending_id, None)

    async def _pending_of(self, transfers: Sequence[Transfer]) -> dict[str, Transfer]:
        ids = [t.pending_id for t in transfers if t.pending_id is not None]
        return await self._pending_of_ids(ids) if ids else {}

    async def _pending_of_ids(self, ids: Sequence[str]) -> dict[str, Transfer]:
        found = {i: self._pending_cache[i] for i in ids if i in self._pending_cache}
        missing = [i for i in ids if i not in found]
        if missing:
            try:
                found.update(await self.store.get_transfers(missing))
            except TransferStoreUnavailable as exc:
                raise LedgerUnavailable(f"cannot read pending transfers: {exc}") from exc
        return found

    async def _explain(
        self, transfers: Sequence[Transfer], codes: Sequence[ResultCode]
    ) -> GroupResult:
        """Turn a refusal into TigerBeetle's answer, reading the store only now.

        A resubmitted id is ``exists`` (or names its differing field) whatever
        else failed; a post/void of an already resolved pending transfer says
        which way it went.
        """
        try:
            existing = await self.store.get_transfers([t.id for t in transfers])
            pending_ids = [t.pending_id for t in transfers if t.pending_id is not None]
            pending: Mapping[str, Transfer] = {}
            resolutions: Mapping[str, Transfer] = {}
            if pending_ids:
                pending = await self.store.get_transfers(pending_ids)
                resolutions = await self.store.get_resolutions(pending_ids)
        except TransferStoreUnavailable as exc:
            raise LedgerUnavailable(f"cannot read the store to explain a refusal: {exc}") from exc
        if existing:
            return _failed(
                transfers,
                [
                    compare_existing(t, existing[t.id]) if t.id in existing else ResultCode.OK
                    for t in transfers
                ],
            )
        explained = list(codes)
        for index, t in enumerate(transfers):
            if t.pending_id is None:
                continue
            code = check_against_pending(
                t, pending.get(t.pending_id), resolutions.get(t.pending_id)
            )
            if code is not ResultCode.OK:
                explained[index] = code
            elif explained[index] is ResultCode.PENDING_TRANSFER_NOT_FOUND:
                # Stored and unresolved, but its account has not confirmed it yet.
                explained[index] = ResultCode.PENDING_TRANSFER_IN_FLIGHT
        return _failed(transfers, explained)


async def run_unknown_settler(ledger: Ledger, *, interval_s: float = 30.0) -> None:
    """Forever: every ``interval_s``, settle the groups of unknown outcome (run in a nursery)."""
    while True:
        await trio.sleep(interval_s)
        try:
            await ledger.settle_unknown_groups()
        except (TransferStoreUnavailable, EngineError) as exc:
            log.warning("groups of unknown outcome not settled yet (%s); again in %g s",
                        exc, interval_s)
