"""The checker: PenPay's books against the providers' own records.

Two kinds of checks (reliability.md §2.2):

* **continuous** (every ``check_every_s`` of mock time, and whatever the
  faults are doing): the transfer rows balance per currency (I1), no
  external effect happened twice (I4), and no terminal status ever changed
  (I6). They read durable state only, so they hold even mid-crash;
* **final**, once faults have stopped and time has run on: every
  transaction is terminal or parked for review (I7), the ledger's actors
  balance and match the rows with no account flag violated (the ledger's
  own ``reconcile``), the floats equal what Deriv and M-Pesa hold (I5),
  every shilling collected by STK is accounted for, the read model agrees
  with the actors, and every HTTP request was answered.

Each violation names the seed and the step (trace line) it was seen at.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from penpay.actors.ledger import DEFAULT_CHART, TransferKind
from penpay.actors.ledger.model import BalanceReplay, replay_balances, trial_balance
from penpay.actors.saga import TERMINAL, Status, short_reference
from penpay.engine import EngineError
from penpay.sim.trace import Trace
from penpay.sim.workload import Stats
from penpay.sim.world import AGENT_LOGIN_ID, SimWorld

#: Rows that move balances (a pending transfer's amount counts once it is posted).
_BOOKED = frozenset({TransferKind.POSTED, TransferKind.POST_PENDING})
#: Accounts a finished transaction's money only passes through.
_PASS_THROUGH = ("customer_in_transit_kes", "customer_in_transit_usd", "suspense_kes",
                 "suspense_usd")

_DEPOSIT_REF = re.compile(r"PenPay deposit ([0-9a-f-]{36}) attempt \d+$")
_WITHDRAWAL_REF = re.compile(r"PenPay withdrawal ([0-9a-f-]{36})$")
_RETURN_REF = re.compile(r"PenPay withdrawal reversal ([0-9a-f-]{36}) attempt \d+$")
TERMINAL_VALUES = frozenset(s.value for s in TERMINAL)


@dataclass
class Violation:
    name: str
    detail: str
    seed: int
    step: int

    def __str__(self) -> str:
        return f"[seed {self.seed}, step {self.step}] {self.name}: {self.detail}"


@dataclass
class Checker:
    world: SimWorld
    stats: Stats
    #: Violation names reported as findings instead (see :mod:`penpay.sim.findings`).
    tolerated: frozenset[str] = frozenset()
    violations: list[Violation] = field(default_factory=list)
    findings: list[Violation] = field(default_factory=list)
    last_status: dict[str, str] = field(default_factory=dict)
    checks: int = 0
    # The continuous checks follow the append-only records (transfer rows, the
    # sandboxes' moves, payouts and collections) and read only what is new.
    _rows: BalanceReplay = field(default_factory=BalanceReplay)
    _rows_seen: int = 0
    _seen: Counter[str] = field(default_factory=Counter)
    _counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def trace(self) -> Trace:
        return self.world.trace

    def fail(self, name: str, detail: str) -> None:
        violation = Violation(name, detail, self.world.seed, self.trace.lines)
        if name in self.tolerated:
            self.findings.append(violation)
            self.trace.record("finding", name, detail)
        else:
            self.violations.append(violation)
            self.trace.record("violation", name, detail)

    # ------------------------------------------------------------ continuous

    def saw_status(self, kind: str, transaction_id: str, status: str) -> None:
        """I6: a terminal status is final."""
        before = self.last_status.get(transaction_id)
        if before in TERMINAL_VALUES and status != before:
            self.fail("terminal_status_changed", f"{kind} {transaction_id}: {before} -> {status}")
        self.last_status[transaction_id] = status

    def check_continuous(self) -> None:
        self.checks += 1
        self._rows_balance()
        self._external_effects_once()

    def _rows_balance(self) -> None:
        rows = self.world.durable.transfers.transfers_after(self._rows_seen)
        self._rows_seen += len(rows)
        self._rows.apply(rows)
        for currency, line in trial_balance(DEFAULT_CHART, self._rows.balances).items():
            if not line.balanced:
                self.fail("trial_balance", f"{currency}: transfer rows {line}")

    def _new(self, name: str, records: list[Any]) -> list[Any]:
        """The entries of an append-only list not read before."""
        seen = self._seen[name]
        self._seen[name] = len(records)
        return records[seen:]

    def _once(self, what: str, key: str) -> int:
        """Count one more occurrence of ``key``; returns the count so far."""
        self._counts[what, key] += 1
        return self._counts[what, key]

    def _external_effects_once(self) -> None:
        for move in self._new("deriv", self.world.boxes.deriv_world.moves):
            description = move.description
            if move.kind == "paymentagent_transfer":
                if (count := self._once("transfer", description)) > 1:
                    self.fail("double_deriv_transfer",
                              f"{count} transfers for {description!r}")
                if (found := _DEPOSIT_REF.match(description)) and (
                    count := self._once("credit", found.group(1))
                ) > 1:
                    self.fail("double_deriv_credit",
                              f"deposit {found.group(1)} credited {count} times")
                if (found := _RETURN_REF.match(description)) and (
                    count := self._once("return", found.group(1))
                ) > 1:
                    self.fail("double_deriv_return",
                              f"withdrawal {found.group(1)} returned {count}x")
            elif move.kind == "paymentagent_withdraw" and (
                count := self._once("withdraw", description)
            ) > 1:
                self.fail("double_deriv_withdrawal", f"{count} withdrawals for {description!r}")
        daraja = self.world.boxes.daraja.world
        for payout in self._new("payouts", daraja.payouts):
            originator = payout.originator_conversation_id
            if (count := self._once("payout", originator)) > 1:
                self.fail("double_b2c_payout", f"{count} payouts for {originator}")
        for collection in self._new("collections", daraja.collections):
            if (count := self._once("collection", collection.receipt)) > 1:
                self.fail("double_collection",
                          f"receipt {collection.receipt} collected {count} times")

    # ----------------------------------------------------------------- final

    async def check_final(self) -> None:
        self.check_continuous()
        # The rows as the run left them: reading a transaction wakes its actor,
        # whose recovery re-issues every posting its state implies, which would
        # repair (and hide) a posting the run never made.
        rows = self.world.durable.transfers.all_transfers()
        states = await self._states()
        woken = len(self.world.durable.transfers.all_transfers()) - len(rows)
        if woken:
            self.fail("booked_only_on_reload",
                      f"{woken} transfer rows were written only when the checker woke "
                      "their transactions: the run had left them unbooked")
        self._books_per_transaction(states, rows)
        self._liveness(states)
        await self._ledger()
        unposted = self._holds_resolved(states)
        self._floats_match(unposted, states)
        self._money_accounted(states)
        self._answered()

    async def _states(self) -> dict[str, Any]:
        """Every transaction's state, from its actor (the source of truth)."""
        payments = self.world.services.payments
        assert payments is not None
        states: dict[str, Any] = {}
        for row in sorted(self.world.durable.index.rows.values(), key=lambda r: str(r.id)):
            if row.status == "REFUSED":
                continue
            try:
                state = await payments.state_of(str(row.id))
            except EngineError as exc:  # parked: e.g. the ledger refused its postings
                self.fail("actor_parked", f"{row.type} {row.id}: {exc}")
                continue
            if state is None or not state.started:
                if row.status != "REFUSED":
                    self.fail("reserved_never_started",
                              f"{row.type} {row.id} is {row.status} in the index, never started")
                continue
            states[str(row.id)] = state
            if row.status != state.status.value:
                self.fail("read_model_stale",
                          f"{row.type} {row.id}: index {row.status}, actor {state.status.value}")
        return states

    def _books_per_transaction(self, states: dict[str, Any], rows: list[Any]) -> None:
        """Each finished transaction's own rows, against its quote alone.

        The trial balance cannot fail (every row debits what it credits) and
        the floats see only the providers' side: a cent left in transit, or
        spread booked as rounding, shows only here. Nothing of a finished
        transaction may stay in transit or suspense, and its revenue is
        exactly its quote's (none when reversed or failed).
        """
        net: dict[str, Counter[str]] = {}
        for t in rows:
            if t.transaction_id is None or t.kind not in _BOOKED:
                continue
            books = net.setdefault(t.transaction_id, Counter())
            books[t.debit_account] += t.amount_cents
            books[t.credit_account] -= t.amount_cents
        for transaction_id, state in states.items():
            if state.status not in TERMINAL:
                continue
            books = net.get(transaction_id, Counter())
            left = {a: books[a] for a in _PASS_THROUGH if books[a]}
            if left:
                self.fail("money_left_in_transit",
                          f"{transaction_id} {state.status.value}: {left}")
            quote = state.quote
            earned = (-books["fx_spread_revenue_kes"], -books["rounding_kes"])
            owed = ((quote.spread_cents, quote.rounding_cents)
                    if state.status is Status.COMPLETED else (0, 0))
            if earned != owed:
                self.fail("revenue_misbooked",
                          f"{transaction_id} {state.status.value}: spread and rounding "
                          f"booked {earned}, the quote says {owed}")

    def _liveness(self, states: dict[str, Any]) -> None:
        for transaction_id, state in states.items():
            if state.status not in TERMINAL and state.status is not Status.NEEDS_REVIEW:
                self.fail("stuck", f"{transaction_id} still {state.status.value}")

    async def _ledger(self) -> None:
        ledger = self.world.services.ledger
        assert ledger is not None
        for currency, line in (await ledger.trial_balance()).items():
            if not line.balanced:
                self.fail("trial_balance", f"{currency}: ledger actors {line}")
        report = await ledger.reconcile()
        if report.drift:
            self.fail("ledger_drift", f"actors differ from rows: {report.drift[:3]}")
        if report.held_groups:
            self.fail("ledger_held_groups", f"{report.held_groups}")

    def _mpesa_by_transaction(self, states: dict[str, Any]) -> list[str]:
        """Which transactions make the M-Pesa float differ from Daraja's own records."""
        daraja = self.world.boxes.daraja.world
        collected = {c.checkout_request_id: c.amount_cents for c in daraja.collections}
        paid: dict[str, int] = {}
        for p in daraja.payouts:  # a refund's later attempts carry "N<attempt>" after its id
            identity = p.originator_conversation_id.split("N", 1)[0]
            paid[identity] = paid.get(identity, 0) + p.amount_cents
        booked: dict[str, int] = {}
        for t in self.world.durable.transfers.all_transfers():
            if t.transaction_id is None or t.kind.value in ("pending", "void_pending"):
                continue
            sign = (1 if t.debit_account == "mpesa_float"
                    else -1 if t.credit_account == "mpesa_float" else 0)
            booked[t.transaction_id] = booked.get(t.transaction_id, 0) + sign * t.amount_cents
        lines = []
        by_reference = {tx.account_reference: tx.checkout_request_id
                        for tx in daraja.stk.values()}
        for transaction_id, state in states.items():
            checkout = getattr(state, "checkout_request_id", None)
            if checkout is None and hasattr(state, "checkout_request_id"):
                # PenPay never learned the id (answer and callback both lost): find
                # the collection by the AccountReference derived from the transaction.
                checkout = by_reference.get(short_reference(transaction_id))
            theirs = collected.get(checkout or "", 0)
            for originator in (getattr(state, "refund_originator_id", None),
                               getattr(state, "payout_originator_id", None)):
                theirs -= paid.get((originator or "").split("N", 1)[0], 0)
            ours = booked.get(transaction_id, 0)
            if ours != theirs:
                lines.append(f"{transaction_id} {state.status.value}: M-Pesa {theirs}, "
                             f"ledger {ours} ({getattr(state, 'review_reason', None)})")
        return lines

    def _floats_match(self, unposted_deriv: int = 0, states: dict[str, Any] | None = None) -> None:
        balances = replay_balances(self.world.durable.transfers.all_transfers())
        deriv = balances.get("deriv_float")
        mpesa = balances.get("mpesa_float")
        ours_deriv = 0 if deriv is None else deriv.debits_posted - deriv.credits_posted
        ours_mpesa = 0 if mpesa is None else mpesa.debits_posted - mpesa.credits_posted
        theirs_deriv = self.world.boxes.deriv_world.balance_cents(AGENT_LOGIN_ID)
        accounts = self.world.boxes.daraja.world.accounts
        theirs_mpesa = accounts.working_cents + accounts.utility_cents
        if ours_deriv != theirs_deriv and ours_deriv - theirs_deriv == unposted_deriv:
            self.fail("deriv_float_drift_from_unposted_holds",
                      f"ledger {ours_deriv}, Deriv agent {theirs_deriv}: exactly the "
                      f"{unposted_deriv} cents of holds completed deposits never posted")
        elif ours_deriv != theirs_deriv:
            self.fail("deriv_float_drift",
                      f"ledger {ours_deriv}, Deriv agent {theirs_deriv} "
                      f"(drift {theirs_deriv - ours_deriv})")
        if ours_mpesa != theirs_mpesa:
            where = self._mpesa_by_transaction(states) if states is not None else []
            if where and all(" NEEDS_REVIEW: " in line and ", ledger 0 " in line
                             for line in where):
                # Every unbooked shilling belongs to a deposit parked in review whose
                # collection PenPay could not learn of (its STK answer and one-shot
                # callback were both lost): exactly what review is for.
                self.trace.record("review", f"collections awaiting an operator: {where}")
                return
            self.fail("mpesa_float_drift",
                      f"ledger {ours_mpesa}, M-Pesa {theirs_mpesa} "
                      f"(drift {theirs_mpesa - ours_mpesa}); by transaction: {where[:5]}")

    def _holds_resolved(self, states: dict[str, Any]) -> int:
        """A finished transaction leaves no pending ledger hold behind.

        Returns the USD cents of Deriv float holds left pending by completed
        deposits: money Deriv has paid out that the ledger still shows as float.
        """
        unposted = 0
        rows = self.world.durable.transfers.all_transfers()
        resolved = {t.pending_id for t in rows if t.pending_id is not None}
        for t in rows:
            if t.kind is not TransferKind.PENDING or t.id in resolved:
                continue
            state = states.get(t.transaction_id or "")
            status = state.status.value if state is not None else "unknown"
            if status != Status.NEEDS_REVIEW.value:
                self.fail("hold_never_resolved",
                          f"{t.code} of {t.transaction_id} ({status}) is still pending")
                if status == Status.COMPLETED.value and t.credit_account == "deriv_float":
                    unposted += t.amount_cents
        return unposted

    def _money_accounted(self, states: dict[str, Any]) -> None:
        boxes = self.world.boxes
        deriv_moves = boxes.deriv_world.moves
        credited = {
            m.group(1) for m in (_DEPOSIT_REF.match(x.description) for x in deriv_moves
                                 if x.kind == "paymentagent_transfer") if m
        }
        withdrawn = {
            m.group(1) for m in (_WITHDRAWAL_REF.match(x.description) for x in deriv_moves
                                 if x.kind == "paymentagent_withdraw") if m
        }
        returned = {
            m.group(1) for m in (_RETURN_REF.match(x.description) for x in deriv_moves
                                 if x.kind == "paymentagent_transfer") if m
        }
        paid = {p.originator_conversation_id for p in boxes.daraja.world.payouts}
        by_reference = {
            short_reference(t): t for t, s in states.items() if s.quote.type.value == "deposit"
        }
        stk = boxes.daraja.world.stk
        collected: set[str] = set()
        for collection in boxes.daraja.world.collections:
            tx = stk.get(collection.checkout_request_id)
            transaction_id = by_reference.get(tx.account_reference) if tx else None
            if transaction_id is None:
                self.fail("unknown_collection", f"receipt {collection.receipt} matches no deposit")
                continue
            collected.add(transaction_id)
        for transaction_id, state in states.items():
            status = state.status
            refund = "PPR" + transaction_id.replace("-", "")
            if state.quote.type.value == "deposit":
                self._deposit_accounted(transaction_id, status, transaction_id in collected,
                                        transaction_id in credited, refund in paid)
            else:
                payout = "PPW" + transaction_id.replace("-", "")
                self._withdrawal_accounted(transaction_id, status, transaction_id in withdrawn,
                                           transaction_id in returned, payout in paid)

    def _deposit_accounted(
        self, tid: str, status: Status, collected: bool, credited: bool, refunded: bool
    ) -> None:
        if collected and not (credited or refunded or status is Status.NEEDS_REVIEW):
            self.fail("deposit_money_lost",
                      f"{tid} collected by STK, not credited, not refunded ({status.value})")
        if credited and refunded:
            self.fail("deposit_paid_twice", f"{tid} credited on Deriv and refunded by B2C")
        if (credited or refunded) and not collected:
            self.fail("deposit_without_money", f"{tid} paid out but nothing was collected")
        expected = {
            Status.COMPLETED: (True, True, False),
            Status.REVERSED: (True, False, True),
            Status.FAILED: (False, False, False),
        }.get(status)
        if expected is not None and expected != (collected, credited, refunded):
            self.fail("deposit_status_disagrees",
                      f"{tid} {status.value}: collected={collected} credited={credited} "
                      f"refunded={refunded}")

    def _withdrawal_accounted(
        self, tid: str, status: Status, withdrawn: bool, returned: bool, paid: bool
    ) -> None:
        if paid and returned:
            self.fail("withdrawal_paid_twice", f"{tid} paid by B2C and returned on Deriv")
        if (paid or returned) and not withdrawn:
            self.fail("withdrawal_without_money", f"{tid} paid out but nothing was withdrawn")
        expected = {
            Status.COMPLETED: (True, False, True),
            Status.REVERSED: (True, True, False),
            Status.FAILED: (False, False, False),
        }.get(status)
        if expected is not None and expected != (withdrawn, returned, paid):
            self.fail("withdrawal_status_disagrees",
                      f"{tid} {status.value}: withdrawn={withdrawn} returned={returned} "
                      f"paid={paid}")

    def _answered(self) -> None:
        stats = self.stats
        if stats.answered != stats.sent:
            self.fail("unanswered_requests", f"{stats.sent - stats.answered} of {stats.sent}")
        for entry in sorted(stats.accepted):
            if entry.startswith("idempotency-mismatch:"):
                self.fail("idempotency_mismatch", entry)
        index = self.world.durable.index.rows
        for entry in stats.accepted:
            if not entry.startswith("idempotency") and uuid.UUID(entry) not in index:
                self.fail("accepted_unknown", f"202 for {entry} but no such transaction")
