"""The one money type: integer minor units of an ISO 4217 currency.

There are no floats anywhere in PenPay's money path. Decimal strings from the
outside world (``"10.50"``, Deriv's JSON numbers) are parsed exactly and
refused when they carry more precision than the currency has, instead of
being rounded silently. Conversions that must round take an explicit
:class:`Rounding` and report the remainder so the caller can book it.
"""

from __future__ import annotations

import enum
from decimal import Decimal, InvalidOperation
from typing import Self

import msgspec

from penpay.errors import PenPayError


class MoneyError(PenPayError, ValueError):
    """An amount is malformed, mixes currencies, or has too much precision."""


class Currency(enum.StrEnum):
    KES = "KES"
    USD = "USD"

    @property
    def exponent(self) -> int:
        """Digits after the decimal point in this currency's minor unit."""
        return 2


class Rounding(enum.Enum):
    """Which way a division rounds; money code always names one."""

    DOWN = "down"  # towards zero
    UP = "up"  # away from zero


def divide(numerator: int, denominator: int, rounding: Rounding) -> tuple[int, int]:
    """Integer division of non-negative numbers with explicit rounding.

    Returns ``(quotient, remainder)`` where ``remainder`` is what rounding took
    away (``DOWN``, >= 0) or added (``UP``, <= 0), in units of the numerator, so
    that ``quotient * denominator + remainder == numerator`` always holds.
    """
    if numerator < 0 or denominator <= 0:
        raise MoneyError(f"divide() takes non-negative amounts, got {numerator}/{denominator}")
    quotient, remainder = divmod(numerator, denominator)
    if rounding is Rounding.UP and remainder:
        quotient += 1
        remainder -= denominator
    return quotient, remainder


class Money(msgspec.Struct, frozen=True):
    """An amount of one currency in integer minor units (cents)."""

    amount_cents: int
    currency: Currency

    def __post_init__(self) -> None:
        if isinstance(self.amount_cents, bool) or not isinstance(self.amount_cents, int):
            raise MoneyError(f"amount_cents must be an int, got {self.amount_cents!r}")

    @classmethod
    def parse(cls, text: str | int | Decimal, currency: Currency | str) -> Self:
        """Parse a decimal amount in major units (``"10.50"`` USD -> 1050 cents)."""
        cur = Currency(currency)
        try:
            value = Decimal(str(text))
        except InvalidOperation:
            raise MoneyError(f"{text!r} is not a decimal amount") from None
        if not value.is_finite():
            raise MoneyError(f"{text!r} is not a finite amount")
        scaled = value.scaleb(cur.exponent)
        if scaled != scaled.to_integral_value():
            raise MoneyError(f"{text} {cur} has more than {cur.exponent} decimal places")
        return cls(int(scaled), cur)

    def to_decimal(self) -> Decimal:
        return Decimal(self.amount_cents).scaleb(-self.currency.exponent)

    def format(self) -> str:
        """Major units with exactly the currency's decimals, e.g. ``"10.50"``."""
        return f"{self.to_decimal():.{self.currency.exponent}f}"

    def _same(self, other: Money) -> None:
        if self.currency is not other.currency:
            raise MoneyError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_cents + other.amount_cents, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount_cents - other.amount_cents, self.currency)

    def __str__(self) -> str:
        return f"{self.format()} {self.currency}"
