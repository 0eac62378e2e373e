"""The worked examples of ``doc/ledger.md``, produced by the code itself.

Each example feeds a flow (deposit or withdrawal) the inputs of a real
scenario, takes the ledger postings it asks for, applies them to a ledger
(in memory) and renders the transfers and the balances after them. The
documentation is generated from this module, and a test checks that it still
matches, so the examples cannot drift from what PenPay does.

Regenerate with ``python -m penpay.ledger_examples``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
import trio.testing

from penpay.actors import deposit, withdrawal
from penpay.actors.fx import FxPolicy, Quote, TransactionType
from penpay.actors.ledger.chart import DEFAULT_CHART
from penpay.actors.ledger.model import Balance
from penpay.actors.ledger.service import Ledger
from penpay.actors.ledger_port import LedgerAdapter, fund
from penpay.actors.saga import (
    Account,
    B2CAccepted,
    B2CResult,
    DerivCredited,
    DerivRejected,
    Input,
    Posting,
    PostingKind,
    PostLedger,
    SagaTimings,
    StkCallback,
    StkPushAccepted,
    StkQueryResult,
)
from penpay.engine.testing import open_test_system
from penpay.money import Currency
from penpay.storage.transfers_memory import InMemoryTransferStore

TIMINGS = SagaTimings()
PHONE = "254712345678"
OPENING_KES_CENTS = 10_000_000  # KES 100,000.00
OPENING_USD_CENTS = 100_000  # USD 1,000.00


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    units, rest = divmod(abs(cents), 100)
    return f"{sign}{units:,}.{rest:02d}"


def _postings(flow: Any, start: Input, inputs: list[Callable[[Any], Input]]) -> list[Posting]:
    """Run ``flow`` through ``start`` and ``inputs``; the postings it asked for, in order."""
    state = flow.DepositState() if flow is deposit else flow.WithdrawalState()
    postings: list[Posting] = []
    now = 0
    for make in [lambda _: start, *inputs]:
        now += 1000
        for event in flow.decide(state, make(state), now, TIMINGS):
            before, state = state, flow.evolve(state, event)
            postings += [
                c.posting for c in flow.react(before, event, state, TIMINGS)
                if isinstance(c, PostLedger)
            ]
    return postings


def _deposit_start(n: int, quote: Quote) -> deposit.Start:
    return deposit.Start(
        transaction_id=f"00000000-0000-7000-8000-{n:012d}", user_id="u", phone=PHONE,
        deriv_login_id="CR1", quote=quote, callback_token="t",
    )


def _paid(quote: Quote) -> list[Callable[[Any], Input]]:
    return [
        lambda s: StkPushAccepted("m", "ws_CO_1"),
        lambda s: StkCallback("ws_CO_1", "0", "ok", "RCPT", quote.kes_cents, PHONE),
        lambda s: StkQueryResult("ws_CO_1", "0"),
    ]


def scenarios() -> list[tuple[str, str, list[Posting]]]:
    """(title, explanation, postings) for each worked example."""
    deposit_fx = FxPolicy(mid_kes_cents_per_usd=13050, spread_kes_cents=500)
    withdrawal_fx = FxPolicy(mid_kes_cents_per_usd=13550, spread_kes_cents=500)
    result = []

    q = deposit_fx.quote(TransactionType.DEPOSIT, 1000, Currency.USD, 0)
    result.append((
        "Deposit: USD 10.00 at 135.50 KES/USD, paid with KES 1,355 by M-Pesa",
        "Mid 130.50, spread 5.00: the user pays 10.00 x 135.50 = KES 1,355.00 exactly. "
        "At mid the USD is worth KES 1,305.00 (FX position); the spread, KES 50.00, is "
        "revenue. The hold on the Deriv float is taken before the deposit is accepted and "
        "posted when Deriv confirms the credit.",
        [deposit.float_hold(q), *_postings(deposit, _deposit_start(1, q), [
            *_paid(q), lambda s: DerivCredited(s.deriv_reference, 1)])],
    ))

    q = withdrawal_fx.quote(TransactionType.WITHDRAWAL, 2000, Currency.USD, 0)
    start = withdrawal.Start(
        transaction_id="00000000-0000-7000-8000-000000000002", user_id="u", phone=PHONE,
        deriv_login_id="CR1", quote=q, callback_token="t", verification_code="CODE1234",
    )
    result.append((
        "Withdrawal: USD 20.00 at 130.50 KES/USD, KES 2,610 paid by B2C",
        "Mid 135.50, spread 5.00: 20.00 x 130.50 = KES 2,610.00 to the phone. At mid the "
        "USD is worth KES 2,710.00; KES 100.00 of spread is revenue.",
        _postings(withdrawal, start, [
            lambda s: DerivCredited(s.deriv_reference, 7),
            lambda s: B2CAccepted(s.payout_originator_id, "AG_1"),
            lambda s: B2CResult(s.payout_originator_id, "0", "ok", "RCPT2", q.kes_cents),
        ]),
    ))

    q = deposit_fx.quote(TransactionType.DEPOSIT, 1001, Currency.USD, 0)
    result.append((
        "FX conversion with rounding: a deposit of USD 10.01",
        "10.01 x 135.50 = KES 1,356.355, but M-Pesa moves whole shillings: the user pays "
        "KES 1,357.00 (rounded up, in PenPay's favour). At mid 130.50 the USD is worth "
        "1,306.305, booked as 1,306.30 (rounded down); spread 10.01 x 5.00 = 50.05; the "
        "remainder 1,357.00 - 1,306.30 - 50.05 = 0.65 goes to `rounding_kes`. Nothing is lost.",
        [deposit.float_hold(q), *_postings(deposit, _deposit_start(3, q), [
            *_paid(q), lambda s: DerivCredited(s.deriv_reference, 3)])],
    ))

    q = deposit_fx.quote(TransactionType.DEPOSIT, 1000, Currency.USD, 0)
    result.append((
        "Reversal: the deposit was paid, Deriv refused the credit, B2C refunds it",
        "M-Pesa collected KES 1,355.00; Deriv refused. The float hold is voided (no USD "
        "moved), no conversion was booked, and the full KES 1,355.00 goes back by B2C.",
        [deposit.float_hold(q), *_postings(deposit, _deposit_start(4, q), [
            *_paid(q),
            lambda s: DerivRejected(s.deriv_reference, "PaymentAgentTransferError", "no"),
            lambda s: B2CAccepted(s.refund_originator_id, "AG_2"),
            lambda s: B2CResult(s.refund_originator_id, "0", "ok", "RFND", q.kes_cents),
        ])],
    ))
    return result


def _transfer_rows(postings: list[Posting]) -> list[str]:
    rows = ["| step | debit | credit | amount | currency | kind |",
            "|---|---|---|---:|---|---|"]
    holds = {p.name: p for p in postings if p.kind is PostingKind.HOLD}
    for p in postings:
        if p.kind in (PostingKind.POST_HOLD, PostingKind.VOID_HOLD):
            leg = holds[p.hold or ""].legs[0]
            kind = "post pending" if p.kind is PostingKind.POST_HOLD else "void pending"
            rows.append(f"| `{p.name}` | {leg.debit} | {leg.credit} | "
                        f"{_money(leg.amount_cents)} | {leg.currency} | {kind} |")
            continue
        kind = "pending" if p.kind is PostingKind.HOLD else "posted"
        for leg in p.legs:
            rows.append(f"| `{p.name}` | {leg.debit} | {leg.credit} | "
                        f"{_money(leg.amount_cents)} | {leg.currency} | {kind} |")
    return rows


def _balance_rows(balances: dict[str, Balance]) -> list[str]:
    rows = ["| account | debits posted | credits posted | pending dr / cr |",
            "|---|---:|---:|---:|"]
    totals: dict[Currency, list[int]] = {}
    for code in DEFAULT_CHART:
        b = balances.get(code)
        if b is None or not (b.debits_posted or b.credits_posted or b.debits_pending
                             or b.credits_pending):
            continue
        currency = DEFAULT_CHART[code].currency
        sums = totals.setdefault(currency, [0, 0, 0, 0])
        for i, value in enumerate((b.debits_posted, b.credits_posted, b.debits_pending,
                                   b.credits_pending)):
            sums[i] += value
        rows.append(f"| {code} | {_money(b.debits_posted)} | {_money(b.credits_posted)} | "
                    f"{_money(b.debits_pending)} / {_money(b.credits_pending)} |")
    for currency, (dp, cp, dpe, cpe) in sorted(totals.items()):
        rows.append(f"| **Σ {currency}** | {_money(dp)} | {_money(cp)} | "
                    f"{_money(dpe)} / {_money(cpe)} |")
    return rows


async def _render() -> str:
    lines = [
        "Generated from the code by `python -m penpay.ledger_examples`: each",
        "example runs a flow's real postings through the ledger, which starts with",
        "KES 100,000.00 and USD 1,000.00 of owner equity funding the floats. Balances",
        "are cumulative across the examples. Amounts are in major units.",
        "",
    ]
    async with open_test_system(seed=1) as system:
        ledger = Ledger(system, InMemoryTransferStore(), DEFAULT_CHART)
        await ledger.start()
        await fund(ledger, name="opening_kes", float_account=Account.MPESA_FLOAT,
                   equity=Account.OWNER_EQUITY_KES, amount_cents=OPENING_KES_CENTS,
                   currency=Currency.KES)
        await fund(ledger, name="opening_usd", float_account=Account.DERIV_FLOAT,
                   equity=Account.OWNER_EQUITY_USD, amount_cents=OPENING_USD_CENTS,
                   currency=Currency.USD)
        adapter = LedgerAdapter(ledger)
        for n, (title, why, postings) in enumerate(scenarios(), start=1):
            transaction_id = f"00000000-0000-7000-8000-{n:012d}"
            for posting in postings:
                await adapter.post(transaction_id, posting)
            lines += [f"### {title}", "", why, "", *_transfer_rows(postings), "",
                      "Balances after it:", "", *_balance_rows(await ledger.balances()), ""]
        trial = await ledger.trial_balance()
        assert all(line.balanced for line in trial.values()), trial
        assert (await ledger.reconcile()).clean
    return "\n".join(lines)


def render() -> str:
    """The worked-examples section of doc/ledger.md."""
    return trio.run(_render, clock=trio.testing.MockClock(autojump_threshold=0))


if __name__ == "__main__":
    print(render())
