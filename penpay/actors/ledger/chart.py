"""The chart of accounts: which ledger accounts exist and what they may hold.

An account is identified by its ``code`` (a stable, human-readable string
such as ``"mpesa_float"``); it holds exactly one currency and has a normal
side (assets and expenses grow by debits; liabilities, equity and revenue by
credits). Two optional flags bound its balance, exactly as in TigerBeetle:

- ``debits_must_not_exceed_credits``: debits (posted + pending) may never
  exceed posted credits. Liabilities and revenue use it: a customer balance
  we owe can never go below zero.
- ``credits_must_not_exceed_debits``: credits (posted + pending) may never
  exceed posted debits. Asset floats use it: we can never pay out more
  M-Pesa or Deriv money than the float holds.

The chart is configuration: :data:`DEFAULT_CHART` is PenPay's, and a
deployment (or a test, or the benchmark) builds its own with
:meth:`Chart.extend`. The PostgreSQL transfer store copies the chart into its
``ledger_accounts`` table at start-up, so the database can enforce currency
and existence of every account a transfer names.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping

import msgspec

from penpay.errors import ConfigurationError
from penpay.money import Currency

#: Account codes are short lower-case identifiers; they appear in SQL and logs.
ACCOUNT_CODE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class Side(enum.StrEnum):
    """The side of an entry, and an account's normal side."""

    DEBIT = "debit"
    CREDIT = "credit"


class AccountSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One account of the chart."""

    code: str
    name: str
    currency: Currency
    normal_side: Side
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False

    def __post_init__(self) -> None:
        if not ACCOUNT_CODE_PATTERN.match(self.code):
            raise ConfigurationError(
                f"account code {self.code!r} must match {ACCOUNT_CODE_PATTERN.pattern}"
            )
        if self.debits_must_not_exceed_credits and self.credits_must_not_exceed_debits:
            # Both flags together pin the balance at zero forever; it is always a mistake.
            raise ConfigurationError(f"account {self.code!r} sets both balance flags")


def _asset(code: str, name: str, currency: Currency) -> AccountSpec:
    return AccountSpec(
        code=code,
        name=name,
        currency=currency,
        normal_side=Side.DEBIT,
        credits_must_not_exceed_debits=True,
    )


def _liability(code: str, name: str, currency: Currency, *, bounded: bool = True) -> AccountSpec:
    return AccountSpec(
        code=code,
        name=name,
        currency=currency,
        normal_side=Side.CREDIT,
        debits_must_not_exceed_credits=bounded,
    )


def _free(code: str, name: str, currency: Currency, side: Side) -> AccountSpec:
    return AccountSpec(code=code, name=name, currency=currency, normal_side=side)


class Chart(Mapping[str, AccountSpec]):
    """An immutable mapping from account code to :class:`AccountSpec`."""

    def __init__(self, specs: Iterable[AccountSpec]) -> None:
        accounts: dict[str, AccountSpec] = {}
        for spec in specs:
            if spec.code in accounts:
                raise ConfigurationError(f"account {spec.code!r} is defined twice in the chart")
            accounts[spec.code] = spec
        self._accounts = accounts

    def __getitem__(self, code: str) -> AccountSpec:
        return self._accounts[code]

    def __iter__(self) -> Iterator[str]:
        return iter(self._accounts)

    def __len__(self) -> int:
        return len(self._accounts)

    def extend(self, specs: Iterable[AccountSpec]) -> Chart:
        """A new chart with ``specs`` added (a code defined twice is an error)."""
        return Chart([*self._accounts.values(), *specs])

    def currencies(self) -> list[Currency]:
        return sorted({spec.currency for spec in self._accounts.values()})


KES, USD = Currency.KES, Currency.USD

#: PenPay's chart. Floats are assets we hold at the providers; customer money
#: in transit is a liability; the FX position accounts are where one currency
#: turns into the other (a conversion debits one and credits the other, in
#: their own currencies); equity funds the floats.
DEFAULT_CHART = Chart(
    [
        _asset("mpesa_float", "M-Pesa paybill/B2C float", KES),
        _asset("deriv_float", "Deriv payment-agent float", USD),
        _liability("customer_in_transit_kes", "Customer funds in transit (KES)", KES),
        _liability("customer_in_transit_usd", "Customer funds in transit (USD)", USD),
        # FX positions swing both ways as conversions net out: no flag.
        _free("fx_position_kes", "FX position (KES leg)", KES, Side.CREDIT),
        _free("fx_position_usd", "FX position (USD leg)", USD, Side.DEBIT),
        _liability("fee_revenue_kes", "Fee revenue (KES)", KES),
        _liability("fee_revenue_usd", "Fee revenue (USD)", USD),
        _liability("fx_spread_revenue_kes", "FX spread revenue (KES)", KES),
        _liability("fx_spread_revenue_usd", "FX spread revenue (USD)", USD),
        # Rounding remainders go both ways (in our favour, or absorbed): no flag.
        _free("rounding_kes", "Rounding remainders (KES)", KES, Side.CREDIT),
        _free("rounding_usd", "Rounding remainders (USD)", USD, Side.CREDIT),
        # Suspense parks money whose outcome is unknown; it may be either side.
        _free("suspense_kes", "Suspense: outcome unknown (KES)", KES, Side.CREDIT),
        _free("suspense_usd", "Suspense: outcome unknown (USD)", USD, Side.CREDIT),
        # Capital put in to fund the floats; it can be withdrawn only down to zero.
        _liability("owner_equity_kes", "Owner equity funding the M-Pesa float", KES),
        _liability("owner_equity_usd", "Owner equity funding the Deriv float", USD),
    ]
)
