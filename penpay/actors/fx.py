"""FX quotes: KES per USD, locked at creation, rounded in PenPay's favour.

Rates are exact integers of KES cents per 1 USD (``13550`` is ``"135.50"``),
so no float ever touches a conversion. M-Pesa moves whole shillings: the
KES side of a quote is rounded to whole shillings in PenPay's favour, up for
what the user pays on a deposit and down for what the user receives on a
withdrawal.

Every quote splits the KES side into three integer parts that add up
exactly, and each part is booked to its own ledger account:

- ``kes_at_mid_cents``: the USD amount converted at the mid rate, rounded down
  (the FX position);
- ``spread_cents``: ``usd * spread``, rounded down, capped by what is left
  (FX-spread revenue);
- ``rounding_cents``: the remainder left by whole-shilling and sub-cent rounding
  (the rounding account).

For a deposit ``kes_cents = at_mid + spread + rounding``. For a withdrawal
``at_mid = kes_cents + spread + rounding``.
"""

from __future__ import annotations

import enum
from decimal import Decimal, InvalidOperation

import msgspec

from penpay.money import Currency, MoneyError, Rounding, divide

CENTS_PER_UNIT = 100


class TransactionType(enum.StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"


def parse_rate(text: str) -> int:
    """``"135.50"`` -> ``13550`` KES cents per USD; at most 2 decimals, positive."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise MoneyError(f"{text!r} is not a rate") from None
    scaled = value * CENTS_PER_UNIT
    if not value.is_finite() or scaled != scaled.to_integral_value() or value <= 0:
        raise MoneyError(f"rate {text!r} must be positive with at most 2 decimals")
    return int(scaled)


def format_rate(kes_cents_per_usd: int) -> str:
    """``13550`` -> ``"135.50"``."""
    units, cents = divmod(kes_cents_per_usd, CENTS_PER_UNIT)
    return f"{units}.{cents:02d}"


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    """A locked conversion. All amounts are integer cents."""

    type: TransactionType
    usd_cents: int
    kes_cents: int  # whole shillings: always a multiple of 100
    rate_kes_cents_per_usd: int  # the rate the user gets (mid ± spread)
    mid_kes_cents_per_usd: int
    kes_at_mid_cents: int
    spread_cents: int
    rounding_cents: int
    locked_at_ms: int
    expires_at_ms: int

    def check(self) -> None:
        """Assert the split is exact; a failure here is a money bug, so it is loud."""
        assert self.kes_cents % CENTS_PER_UNIT == 0, self
        assert min(self.usd_cents, self.kes_cents, self.spread_cents, self.rounding_cents) >= 0
        parts = self.spread_cents + self.rounding_cents
        if self.type is TransactionType.DEPOSIT:
            assert self.kes_cents == self.kes_at_mid_cents + parts, self
        else:
            assert self.kes_at_mid_cents == self.kes_cents + parts, self


class FxPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Where the mid rate comes from and how wide the spread is."""

    mid_kes_cents_per_usd: int = 13000
    spread_kes_cents: int = 500
    quote_ttl_s: int = 900

    def rate_for(self, type: TransactionType) -> int:
        if type is TransactionType.DEPOSIT:
            return self.mid_kes_cents_per_usd + self.spread_kes_cents
        rate = self.mid_kes_cents_per_usd - self.spread_kes_cents
        if rate <= 0:
            raise MoneyError("the spread is wider than the mid rate")
        return rate

    def quote(
        self, type: TransactionType, amount_cents: int, currency: Currency, now_ms: int
    ) -> Quote:
        """Quote ``amount_cents`` of ``currency`` (the side the user fixed)."""
        if amount_cents <= 0:
            raise MoneyError("amount_cents must be positive")
        rate = self.rate_for(type)
        mid = self.mid_kes_cents_per_usd
        if currency is Currency.USD:
            usd = amount_cents
            # usd cents * (KES cents per USD) / 100 = KES cents; then whole shillings.
            rounding = Rounding.UP if type is TransactionType.DEPOSIT else Rounding.DOWN
            kes, _ = divide(usd * rate, CENTS_PER_UNIT * CENTS_PER_UNIT, rounding)
            kes *= CENTS_PER_UNIT
        else:
            if amount_cents % CENTS_PER_UNIT:
                raise MoneyError("M-Pesa moves whole shillings: amount_cents must end in 00")
            kes = amount_cents
            # The USD side is rounded down in both directions: for a deposit the
            # user receives it; for a withdrawal the user must give enough USD,
            # so round the USD *up* there instead.
            usd_rounding = Rounding.DOWN if type is TransactionType.DEPOSIT else Rounding.UP
            usd, _ = divide(kes * CENTS_PER_UNIT, rate, usd_rounding)
            if type is TransactionType.WITHDRAWAL:
                # Paying whole shillings from that USD at the rate, rounded down,
                # must still give at least the KES asked for.
                paid, _ = divide(usd * rate, CENTS_PER_UNIT * CENTS_PER_UNIT, Rounding.DOWN)
                kes = paid * CENTS_PER_UNIT
        at_mid, _ = divide(usd * mid, CENTS_PER_UNIT, Rounding.DOWN)
        spread_full, _ = divide(usd * self.spread_kes_cents, CENTS_PER_UNIT, Rounding.DOWN)
        revenue = kes - at_mid if type is TransactionType.DEPOSIT else at_mid - kes
        spread = min(revenue, spread_full)
        quote = Quote(
            type=type,
            usd_cents=usd,
            kes_cents=kes,
            rate_kes_cents_per_usd=rate,
            mid_kes_cents_per_usd=mid,
            kes_at_mid_cents=at_mid,
            spread_cents=spread,
            rounding_cents=revenue - spread,
            locked_at_ms=now_ms,
            expires_at_ms=now_ms + self.quote_ttl_s * 1000,
        )
        quote.check()
        return quote
