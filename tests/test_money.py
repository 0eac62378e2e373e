import pytest

from penpay.money import Currency, Money, MoneyError, Rounding, divide


def test_parse_exact_decimal_into_cents() -> None:
    assert Money.parse("10.50", "USD") == Money(1050, Currency.USD)
    assert Money.parse(7, Currency.KES) == Money(700, Currency.KES)


def test_parse_refuses_more_precision_than_the_currency_has() -> None:
    with pytest.raises(MoneyError, match="decimal places"):
        Money.parse("1.005", "USD")


def test_parse_refuses_garbage_and_infinity() -> None:
    for text in ("ten", "NaN", "Infinity"):
        with pytest.raises(MoneyError):
            Money.parse(text, "USD")


def test_arithmetic_refuses_mixed_currencies() -> None:
    with pytest.raises(MoneyError, match="cannot combine"):
        Money(1, Currency.USD) + Money(1, Currency.KES)
    assert Money(5, Currency.KES) - Money(2, Currency.KES) == Money(3, Currency.KES)


def test_float_amounts_are_refused() -> None:
    with pytest.raises(MoneyError):
        Money(1.5, Currency.USD)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("num", "den", "rounding", "expected"),
    [(10, 3, Rounding.DOWN, (3, 1)), (10, 3, Rounding.UP, (4, -2)), (9, 3, Rounding.UP, (3, 0))],
)
def test_divide_books_the_remainder(
    num: int, den: int, rounding: Rounding, expected: tuple[int, int]
) -> None:
    quotient, remainder = divide(num, den, rounding)
    assert (quotient, remainder) == expected
    assert quotient * den + remainder == num


def test_format_has_fixed_decimals() -> None:
    assert Money(5, Currency.USD).format() == "0.05"
    assert str(Money(123400, Currency.KES)) == "1234.00 KES"
