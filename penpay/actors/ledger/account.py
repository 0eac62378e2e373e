"""One actor per ledger account: admits holds against its flags, then confirms or releases them.

Why an actor: every change to one account goes through its mailbox, so two
concurrent transfers on one account are decided one after the other against
the same balance and can never both spend the same money.

Why holds: a transfer is written to the store (the commit point) only after
*every* account it touches has reserved it. A reservation counts against the
account's flags at once, as if it were pending, so nothing admitted later
can make it invalid; it is then confirmed (the group committed) or released
(it did not). Reservations are journaled, so they survive a crash of the
account actor; on activation the actor resolves any left over from the
store (see :mod:`penpay.actors.ledger.store` for why that is race-free).

Why batches: a hot account (the M-Pesa float) receives a stream of
requests. With ``batch_messages_max`` > 1 it takes everything queued as one
batch, decides each message in order against the state as updated by the
ones before it, and makes the whole batch's events durable with ONE journal
append before answering anyone. Nobody hears "reserved" before the journal
has it.

Why confirmations and releases are journaled lazily: the store's group
marker, not the account's journal, decides a group. A ``Confirm`` or
``Release`` is applied in memory at once (so every later message sees it)
and its event rides along with the account's next append (a reserve), or is
written when the actor passivates. If the actor crashes first, its journal
still shows the hold, and recovery resolves it from the marker to the same
outcome; so the lazy event changes nothing but the number of appends (one
per reserve batch instead of one per reserve batch plus one per confirm).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import msgspec

from penpay.actors.ledger.chart import AccountSpec, Chart, Side
from penpay.actors.ledger.errors import AccountRefused
from penpay.actors.ledger.model import (
    Balance,
    ResultCode,
    Transfer,
    TransferKind,
    admit,
    apply_effect,
    within_flags,
)
from penpay.actors.ledger.store import TransferStore
from penpay.engine import EventCodec, EventSourcedActor

#: Queued messages one account decides and journals together.
ACCOUNT_BATCH_MESSAGES_MAX = 512
#: Events between snapshots of an account (a hot account writes many).
ACCOUNT_SNAPSHOT_EVERY_EVENTS = 500


class Leg(msgspec.Struct, frozen=True, kw_only=True):
    """One side of one transfer, as the account on that side sees it."""

    transfer_id: str
    kind: TransferKind
    side: Side
    amount_cents: int
    pending_id: str | None = None
    #: For a post/void: the amount of the pending transfer it resolves.
    pending_amount_cents: int = 0
    #: For a post/void: the group that created the pending transfer (None: not known).
    pending_group: str | None = None


# --------------------------------------------------------------------- messages


class Reserve(msgspec.Struct, frozen=True):
    """Hold every leg of one linked group on this account, or none (reply: True)."""

    group_id: str
    legs: tuple[Leg, ...]


class Confirm(msgspec.Struct, frozen=True):
    """The group committed: turn its holds into balance changes (idempotent)."""

    group_id: str


class Release(msgspec.Struct, frozen=True):
    """The group will never commit: drop its holds (idempotent)."""

    group_id: str


class ApplyResolutions(msgspec.Struct, frozen=True):
    """Committed posts/voids of pending transfers open here, reserved nowhere (idempotent).

    A group made only of posts and voids needs no hold: neither can break a
    flag, and the store's unique resolution per pending id decides which
    one wins. It is committed first and then applied here.
    """

    group_id: str
    legs: tuple[Leg, ...]


class GetBalance(msgspec.Struct, frozen=True):
    """Reply: a copy of the confirmed :class:`Balance`."""


class GetHeldGroups(msgspec.Struct, frozen=True):
    """Reply: ids of groups reserved here and neither confirmed nor released."""


class GetOpenPending(msgspec.Struct, frozen=True):
    """Reply: ids of confirmed pending transfers not yet posted or voided."""


# ----------------------------------------------------------------------- events


class HoldsReserved(msgspec.Struct, frozen=True, tag="ledger.holds_reserved"):
    group_id: str
    legs: tuple[Leg, ...]


class GroupConfirmed(msgspec.Struct, frozen=True, tag="ledger.group_confirmed"):
    group_id: str


class GroupReleased(msgspec.Struct, frozen=True, tag="ledger.group_released"):
    group_id: str


class PendingResolved(msgspec.Struct, frozen=True, tag="ledger.pending_resolved"):
    """Committed posts/voids applied without a hold (see :class:`ApplyResolutions`)."""

    group_id: str
    legs: tuple[Leg, ...]


# ------------------------------------------------------------------------ state


class OpenPending(msgspec.Struct, frozen=True):
    side: Side
    amount_cents: int


class AccountState(msgspec.Struct, kw_only=True):
    """Mutable on purpose: a hot account applies thousands of events a second."""

    balance: Balance = msgspec.field(default_factory=Balance)
    #: Sum of held ``posted``/``pending`` legs per side; counted by admission.
    reserved_debits_cents: int = 0
    reserved_credits_cents: int = 0
    held: dict[str, tuple[Leg, ...]] = msgspec.field(default_factory=dict)
    held_transfer_ids: dict[str, str] = msgspec.field(default_factory=dict)
    open_pending: dict[str, OpenPending] = msgspec.field(default_factory=dict)
    #: Pending ids with a post/void held here, mapped to the resolving transfer.
    resolving: dict[str, str] = msgspec.field(default_factory=dict)


def apply_event(state: AccountState, event: Any) -> AccountState:
    """Apply one event in place (and return the state); pure of I/O and clock."""
    match event:
        case HoldsReserved(group_id, legs):
            state.held[group_id] = legs
            for leg in legs:
                state.held_transfer_ids[leg.transfer_id] = group_id
                if leg.kind.resolves_pending:
                    assert leg.pending_id is not None
                    state.resolving[leg.pending_id] = leg.transfer_id
                elif leg.side is Side.DEBIT:
                    state.reserved_debits_cents += leg.amount_cents
                else:
                    state.reserved_credits_cents += leg.amount_cents
        case GroupConfirmed(group_id) | GroupReleased(group_id):
            confirmed = isinstance(event, GroupConfirmed)
            for leg in state.held.pop(group_id, ()):
                del state.held_transfer_ids[leg.transfer_id]
                if leg.kind.resolves_pending:
                    assert leg.pending_id is not None
                    del state.resolving[leg.pending_id]
                elif leg.side is Side.DEBIT:
                    state.reserved_debits_cents -= leg.amount_cents
                else:
                    state.reserved_credits_cents -= leg.amount_cents
                if not confirmed:
                    continue
                apply_effect(
                    state.balance, leg.side, leg.kind, leg.amount_cents, leg.pending_amount_cents
                )
                if leg.kind is TransferKind.PENDING:
                    state.open_pending[leg.transfer_id] = OpenPending(leg.side, leg.amount_cents)
                elif leg.kind.resolves_pending:
                    assert leg.pending_id is not None
                    del state.open_pending[leg.pending_id]
        case PendingResolved(_, legs):
            for leg in legs:
                assert leg.pending_id is not None
                del state.open_pending[leg.pending_id]
                apply_effect(
                    state.balance, leg.side, leg.kind, leg.amount_cents, leg.pending_amount_cents
                )
        case _:
            raise TypeError(f"not a ledger account event: {event!r}")
    return state


def resolution_legs(
    key: str, state: AccountState, transfers: Iterable[Transfer]
) -> tuple[Leg, ...]:
    """This account's legs of committed resolutions whose pending transfer is still open here."""
    legs: list[Leg] = []
    for t in transfers:
        assert t.pending_id is not None
        open_pending = state.open_pending.get(t.pending_id)
        if open_pending is None:
            continue
        side = Side.DEBIT if t.debit_account == key else Side.CREDIT
        legs.append(
            Leg(
                transfer_id=t.id,
                kind=t.kind,
                side=side,
                amount_cents=t.amount_cents,
                pending_id=t.pending_id,
                pending_amount_cents=open_pending.amount_cents,
            )
        )
    return tuple(legs)


def committed_holds(state: AccountState, group_id: str, legs: Iterable[Leg]) -> list[str]:
    """Groups held here that committed resolutions of group ``group_id`` prove committed.

    A resolution's row references its pending transfer's row, so the group
    that created the pending transfer has committed: but only that group. A
    later resubmission of the same pending transfer may be held under the
    same transfer id, and confirming it would apply the pending transfer
    again. And a held group that holds this very resolution is the group
    that committed it. Creators come first: confirming a resolution needs
    its pending transfer open.
    """
    creators: list[str] = []
    holders: list[str] = []
    for leg in legs:
        assert leg.pending_id is not None
        creator = state.held_transfer_ids.get(leg.pending_id)
        if creator is not None and leg.pending_group in (None, creator):
            creators.append(creator)
        if state.held_transfer_ids.get(leg.transfer_id) == group_id:
            holders.append(group_id)
    return [g for g in dict.fromkeys(creators + holders) if g in state.held]


def decide_reserve(
    spec: AccountSpec, state: AccountState, legs: tuple[Leg, ...]
) -> AccountRefused | None:
    """Whether this account can hold every leg at once; None if it can."""
    reserved_debits = state.reserved_debits_cents
    reserved_credits = state.reserved_credits_cents
    resolving_here: set[str] = set()
    for leg in legs:
        if leg.transfer_id in state.held_transfer_ids:
            return AccountRefused(ResultCode.ID_IN_FLIGHT, leg.transfer_id)
        if leg.transfer_id in state.open_pending:
            # A resubmission of a stored pending transfer. Held again, it would be
            # taken for the original's creation by a post of the original that
            # arrives meanwhile (see ApplyResolutions), applying it twice.
            return AccountRefused(ResultCode.EXISTS, leg.transfer_id)
        if leg.kind.resolves_pending:
            pending_id = leg.pending_id
            assert pending_id is not None
            if pending_id in state.resolving or pending_id in resolving_here:
                return AccountRefused(ResultCode.PENDING_TRANSFER_IN_FLIGHT, leg.transfer_id)
            open_pending = state.open_pending.get(pending_id)
            if open_pending is None:
                code = (
                    ResultCode.PENDING_TRANSFER_IN_FLIGHT
                    if pending_id in state.held_transfer_ids  # its creation is not confirmed yet
                    else ResultCode.PENDING_TRANSFER_NOT_FOUND
                )
                return AccountRefused(code, leg.transfer_id)
            if open_pending.side is not leg.side or (
                open_pending.amount_cents != leg.pending_amount_cents
            ):
                return AccountRefused(
                    ResultCode.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT, leg.transfer_id
                )
            resolving_here.add(pending_id)
            continue
        code = admit(
            spec,
            state.balance,
            leg.side,
            leg.amount_cents,
            reserved_debits_cents=reserved_debits,
            reserved_credits_cents=reserved_credits,
        )
        if code is not ResultCode.OK:
            return AccountRefused(code, leg.transfer_id)
        if leg.side is Side.DEBIT:
            reserved_debits += leg.amount_cents
        else:
            reserved_credits += leg.amount_cents
    return None


_DEFERRED = object()  # a query answered after the batch's append


class LedgerAccount(EventSourcedActor[AccountState]):
    """The actor of one account of the chart; its key is the account code."""

    kind = "ledger-account"
    batch_messages_max: ClassVar[int] = ACCOUNT_BATCH_MESSAGES_MAX
    snapshot_every_events: ClassVar[int | None] = ACCOUNT_SNAPSHOT_EVERY_EVENTS
    codec: ClassVar[EventCodec] = EventCodec(
        HoldsReserved, GroupConfirmed, GroupReleased, PendingResolved
    )
    state_type = AccountState

    spec: AccountSpec

    def __init__(self, chart: Chart, store: TransferStore) -> None:
        self.chart = chart
        self.store = store
        #: Confirm/release events applied to :attr:`state` but not journaled
        #: yet; they go first in the next append (see the module docstring).
        self._unjournaled: list[Any] = []

    async def on_start(self) -> None:
        # A key outside the chart raises here, so no message is ever handled for it.
        self.spec = self.chart[self.key]
        await super().on_start()

    def initial_state(self) -> AccountState:
        return AccountState()

    def apply(self, state: AccountState, event: Any) -> AccountState:
        return apply_event(state, event)

    async def on_recovered(self) -> None:
        """Resolve what a crash left behind, from the store.

        Holds: whether each group committed. Open pending transfers: whether
        a post/void of them committed that the journal does not show yet (it
        is applied without a hold, and journaled lazily).
        """
        if self.state.held:
            outcomes = await self.store.resolve_groups(list(self.state.held))
            await self.persist(
                *(
                    GroupConfirmed(group_id) if committed else GroupReleased(group_id)
                    for group_id, committed in outcomes.items()
                )
            )
        if self.state.open_pending:
            found = await self.store.get_resolutions(list(self.state.open_pending))
            legs = resolution_legs(self.key, self.state, found.values())
            if legs:
                await self.persist(PendingResolved("recovered", legs))

    async def receive(self, message: Any) -> Any:
        [reply] = await self.receive_batch([message])
        if isinstance(reply, AccountRefused):
            raise reply
        return reply

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        state = self.state
        events = self._unjournaled
        durable_needed = False  # only a reserve must be durable before its reply
        replies: list[Any] = []
        for message in messages:
            match message:
                case Reserve(group_id, legs):
                    if group_id in state.held:
                        replies.append(True)  # a repeated request: already held
                        continue
                    refusal = decide_reserve(self.spec, state, legs)
                    if refusal is not None:
                        replies.append(refusal)
                        continue
                    event: Any = HoldsReserved(group_id, legs)
                    replies.append(True)
                    durable_needed = True
                case ApplyResolutions(group_id, legs):
                    replies.append(None)
                    for held_group in committed_holds(state, group_id, legs):
                        confirmed = GroupConfirmed(held_group)
                        apply_event(state, confirmed)
                        events.append(confirmed)
                    legs = tuple(leg for leg in legs if leg.pending_id in state.open_pending)
                    if not legs:
                        continue  # already applied
                    event = PendingResolved(group_id, legs)
                case Confirm(group_id):
                    replies.append(None)
                    if group_id not in state.held:
                        continue  # already resolved: confirming twice changes nothing
                    event = GroupConfirmed(group_id)
                case Release(group_id):
                    replies.append(None)
                    if group_id not in state.held:
                        continue
                    event = GroupReleased(group_id)
                case GetBalance() | GetHeldGroups() | GetOpenPending():
                    replies.append(_DEFERRED)
                    continue
                case _:
                    raise TypeError(f"{self.ref.address}: unexpected {message!r}")
            # Applied now so later messages of the batch are decided against it;
            # if the append below fails the actor crashes and this memory is dropped.
            apply_event(state, event)
            events.append(event)
        assert within_flags(self.spec, state.balance), (self.key, state.balance)
        if durable_needed:
            await self._append_applied(events)
        for index, reply in enumerate(replies):
            if reply is _DEFERRED:
                replies[index] = self._query(messages[index])
        return replies

    async def on_passivate(self) -> None:
        """Journal the lazy confirmations/releases, then snapshot."""
        await self._append_applied(self._unjournaled)
        await super().on_passivate()

    def _query(self, message: Any) -> Any:
        match message:
            case GetBalance():
                return self.state.balance.copy()
            case GetHeldGroups():
                return sorted(self.state.held)
            case GetOpenPending():
                return sorted(self.state.open_pending)
        raise TypeError(message)

    async def _append_applied(self, events: list[Any]) -> None:
        """Make already-applied events durable; the counterpart of ``persist``.

        ``persist`` applies after appending; a batch must apply as it decides,
        so this appends only. On failure the exception crashes the actor and
        its state is rebuilt from what the journal really holds.
        """
        if not events:
            return
        records = [self.codec.encode(event) for event in events]
        self.sequence = await self.system.journal.append(
            self.persistence_id, self.sequence, records
        )
        if events is self._unjournaled:
            self._unjournaled = []
        every = self.snapshot_every_events or self.system.config.snapshot_every_events
        if self.sequence - self._snapshot_sequence >= every:
            await self.save_snapshot()
