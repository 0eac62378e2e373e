"""JSON and amounts on the Deriv wire, shared by the client and the sandbox.

Deriv sends and expects amounts as JSON *numbers*. Parsing them as floats
would be a money bug (``0.1 + 0.2``), so JSON fractions decode to
:class:`~decimal.Decimal` and amounts are encoded from integer cents via
``Decimal`` with exactly two decimals (``1050`` -> ``10.50``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

_ENCODER = msgspec.json.Encoder(decimal_format="number")
_DECODER = msgspec.json.Decoder(float_hook=Decimal)

CENTS_EXPONENT = 2
CENTS_PER_UNIT = 100
"""Deriv fiat accounts (USD) have two decimals."""


class WireFormatError(ValueError):
    """A message is not a JSON object."""


def encode(message: dict[str, Any]) -> str:
    """Serialise a message; ``Decimal`` values become JSON numbers."""
    return _ENCODER.encode(message).decode("utf-8")


def decode(text: str) -> dict[str, Any]:
    """Parse a message; JSON fractions become ``Decimal``, never ``float``."""
    try:
        value = _DECODER.decode(text)
    except msgspec.DecodeError as exc:
        raise WireFormatError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise WireFormatError("a message must be a JSON object")
    return value


def cents_to_number(amount_cents: int) -> Decimal:
    """Integer cents as a two-decimal ``Decimal`` (encodes as e.g. ``10.50``)."""
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int):
        raise TypeError(f"amount_cents must be an int, got {amount_cents!r}")
    return Decimal(amount_cents).scaleb(-CENTS_EXPONENT)


def number_to_cents(value: object) -> int | None:
    """Exact cents of a decoded JSON number, or ``None`` if it is not one.

    ``None`` also when the number has more than two decimals or is not
    finite: the caller decides which error that is. Booleans are not numbers.
    Numbers given as strings (Deriv's ``formatnumber`` output) are accepted.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value * CENTS_PER_UNIT
    if isinstance(value, str):
        try:
            value = Decimal(value)
        except ArithmeticError:
            return None
    if not isinstance(value, Decimal) or not value.is_finite():
        return None
    scaled = value.scaleb(CENTS_EXPONENT)
    if scaled != scaled.to_integral_value():
        return None
    return int(scaled)


def format_major(amount_cents: int) -> str:
    """Cents as a human amount without needless decimals (``1000`` -> ``"10"``).

    This is how Deriv's messages print limits ("Minimum is 10, maximum is 2000.").
    """
    whole, frac = divmod(abs(amount_cents), CENTS_PER_UNIT)
    sign = "-" if amount_cents < 0 else ""
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:02d}"
