from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penpay.actors.fx import FxPolicy, TransactionType, format_rate, parse_rate
from penpay.money import Currency, MoneyError

policies = st.builds(
    FxPolicy,
    mid_kes_cents_per_usd=st.integers(min_value=5_000, max_value=50_000),
    spread_kes_cents=st.integers(min_value=0, max_value=2_000),
)


def test_rates_round_trip_exactly() -> None:
    assert parse_rate("135.50") == 13550
    assert format_rate(13550) == "135.50"
    assert format_rate(13005) == "130.05"
    for bad in ("135.555", "-1", "0", "abc", "NaN"):
        with pytest.raises(MoneyError):
            parse_rate(bad)


def test_deposit_of_usd_10_at_135_50() -> None:
    policy = FxPolicy(mid_kes_cents_per_usd=13050, spread_kes_cents=500)
    quote = policy.quote(TransactionType.DEPOSIT, 1000, Currency.USD, now_ms=0)
    assert quote.rate_kes_cents_per_usd == 13550
    assert quote.kes_cents == 135_500  # 1,355.00 exactly: no rounding needed
    assert (quote.kes_at_mid_cents, quote.spread_cents, quote.rounding_cents) == (130_500, 5_000, 0)
    assert quote.expires_at_ms == 900_000


def test_deposit_rounds_the_shillings_up_and_books_the_remainder() -> None:
    policy = FxPolicy(mid_kes_cents_per_usd=13050, spread_kes_cents=500)
    quote = policy.quote(TransactionType.DEPOSIT, 1001, Currency.USD, now_ms=0)
    # 10.01 USD * 135.50 = 1,356.355 KES -> the user pays 1,357 KES.
    assert quote.kes_cents == 135_700
    assert quote.kes_at_mid_cents == 130_630  # 10.01 * 130.50 = 1,306.305 -> 1,306.30
    assert quote.spread_cents == 5_005  # 10.01 * 5.00
    assert quote.rounding_cents == 135_700 - 130_630 - 5_005


def test_withdrawal_rounds_the_shillings_down() -> None:
    policy = FxPolicy(mid_kes_cents_per_usd=13550, spread_kes_cents=500)
    quote = policy.quote(TransactionType.WITHDRAWAL, 2001, Currency.USD, now_ms=0)
    # 20.01 USD * 130.50 = 2,611.305 KES -> the user receives 2,611 KES.
    assert quote.rate_kes_cents_per_usd == 13050
    assert quote.kes_cents == 261_100
    assert quote.kes_at_mid_cents == quote.kes_cents + quote.spread_cents + quote.rounding_cents


def test_kes_amounts_must_be_whole_shillings() -> None:
    with pytest.raises(MoneyError, match="whole shillings"):
        FxPolicy().quote(TransactionType.DEPOSIT, 100_050, Currency.KES, now_ms=0)


@given(policies, st.integers(min_value=1, max_value=10_000_000), st.sampled_from(TransactionType))
def test_usd_quotes_split_exactly_and_favour_penpay(
    policy: FxPolicy, usd_cents: int, type: TransactionType
) -> None:
    quote = policy.quote(type, usd_cents, Currency.USD, now_ms=0)
    quote.check()
    exact_kes_times_100 = usd_cents * quote.rate_kes_cents_per_usd  # KES cents * 100
    if type is TransactionType.DEPOSIT:
        assert quote.kes_cents * 100 >= exact_kes_times_100  # the user pays at least the rate
        assert quote.kes_cents * 100 - exact_kes_times_100 < 100 * 100  # by less than 1 KES
    else:
        assert quote.kes_cents * 100 <= exact_kes_times_100  # the user gets at most the rate
        assert exact_kes_times_100 - quote.kes_cents * 100 < 100 * 100


@given(policies, st.integers(min_value=1, max_value=1_000_000), st.sampled_from(TransactionType))
def test_kes_quotes_split_exactly(policy: FxPolicy, shillings: int, type: TransactionType) -> None:
    quote = policy.quote(type, shillings * 100, Currency.KES, now_ms=0)
    quote.check()
    if type is TransactionType.DEPOSIT:
        assert quote.kes_cents == shillings * 100
    else:
        assert quote.kes_cents >= shillings * 100  # the user gets at least what they asked
