"""Every pure rule of the ledger, one code at a time."""

from __future__ import annotations

import msgspec
import pytest

from penpay.actors.ledger import DEFAULT_CHART, AccountSpec, Balance, ResultCode, Side, TransferKind
from penpay.actors.ledger.model import (
    GROUP_TRANSFERS_MAX,
    admit,
    apply_effect,
    check_against_pending,
    compare_existing,
    replay_balances,
    resolution_of,
    trial_balance,
    validate_group,
    validate_transfer,
    within_flags,
)
from penpay.errors import ConfigurationError
from penpay.money import Currency
from tests.ledger.helpers import tid, transfer

R = ResultCode
BASE = transfer("t", "mpesa_float", "customer_in_transit_kes", 100)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({}, R.OK),
        ({"id": "not-a-uuid"}, R.ID_MUST_BE_UUID),
        ({"id": tid("x").upper()}, R.ID_MUST_BE_UUID),
        ({"amount_cents": 0}, R.AMOUNT_MUST_BE_POSITIVE),
        ({"amount_cents": -5}, R.AMOUNT_MUST_BE_POSITIVE),
        ({"amount_cents": True}, R.AMOUNT_MUST_BE_POSITIVE),
        ({"amount_cents": 2**63 - 1}, R.OK),
        ({"amount_cents": 2**63}, R.AMOUNT_TOO_LARGE),  # no bigint holds it
        ({"credit_account": "mpesa_float"}, R.ACCOUNTS_MUST_BE_DIFFERENT),
        ({"debit_account": "nope"}, R.DEBIT_ACCOUNT_NOT_FOUND),
        ({"credit_account": "nope"}, R.CREDIT_ACCOUNT_NOT_FOUND),
        ({"currency": Currency.USD}, R.CURRENCY_MISMATCH),
        ({"credit_account": "customer_in_transit_usd"}, R.CURRENCY_MISMATCH),
        ({"code": "x" * 65}, R.CODE_TOO_LONG),
        ({"transaction_id": "x" * 65}, R.TRANSACTION_ID_TOO_LONG),
        ({"code": "a\x00b"}, R.TEXT_NOT_STORABLE),  # PostgreSQL text refuses NUL
        ({"transaction_id": "lone \ud800"}, R.TEXT_NOT_STORABLE),
        ({"pending_id": tid("p")}, R.PENDING_ID_MUST_NOT_BE_SET),
        ({"kind": TransferKind.POST_PENDING}, R.PENDING_ID_MUST_BE_UUID),
        ({"kind": TransferKind.VOID_PENDING, "pending_id": "zz"}, R.PENDING_ID_MUST_BE_UUID),
        (
            {"kind": TransferKind.POST_PENDING, "pending_id": tid("t")},
            R.PENDING_ID_MUST_BE_DIFFERENT,
        ),
    ],
)
def test_validate_transfer(changes: dict[str, object], code: ResultCode) -> None:
    assert validate_transfer(msgspec.structs.replace(BASE, **changes), DEFAULT_CHART) is code


def test_group_rules() -> None:
    a = transfer("a", "mpesa_float", "customer_in_transit_kes", 1)
    post1 = transfer(
        "p1",
        "mpesa_float",
        "customer_in_transit_kes",
        1,
        kind=TransferKind.POST_PENDING,
        pending="x",
    )
    post2 = transfer(
        "p2",
        "mpesa_float",
        "customer_in_transit_kes",
        1,
        kind=TransferKind.POST_PENDING,
        pending="x",
    )
    assert validate_group([a, a], DEFAULT_CHART) == [R.OK, R.DUPLICATE_ID_IN_GROUP]
    assert validate_group([post1, post2], DEFAULT_CHART) == [R.OK, R.PENDING_TRANSFER_IN_FLIGHT]
    assert validate_group([a] * (GROUP_TRANSFERS_MAX + 1), DEFAULT_CHART)[0] is R.GROUP_TOO_LARGE


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({}, R.EXISTS),
        ({"timestamp_ms": 5, "linked_group": tid("g")}, R.EXISTS),
        ({"amount_cents": 101}, R.EXISTS_WITH_DIFFERENT_AMOUNT),
        ({"debit_account": "suspense_kes"}, R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT),
        ({"credit_account": "suspense_kes"}, R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT),
        ({"currency": Currency.USD}, R.EXISTS_WITH_DIFFERENT_CURRENCY),
        ({"kind": TransferKind.PENDING}, R.EXISTS_WITH_DIFFERENT_KIND),
        ({"pending_id": tid("p")}, R.EXISTS_WITH_DIFFERENT_PENDING_ID),
        ({"transaction_id": "tx"}, R.EXISTS_WITH_DIFFERENT_TRANSACTION_ID),
        ({"code": "other"}, R.EXISTS_WITH_DIFFERENT_CODE),
    ],
)
def test_compare_existing(changes: dict[str, object], code: ResultCode) -> None:
    assert compare_existing(msgspec.structs.replace(BASE, **changes), BASE) is code


PENDING = transfer("p", "customer_in_transit_kes", "mpesa_float", 500, kind=TransferKind.PENDING)


@pytest.mark.parametrize(
    ("post", "pending", "resolution", "code"),
    [
        (resolution_of(PENDING, transfer_id=tid("a"), void=False), PENDING, None, R.OK),
        (
            resolution_of(PENDING, transfer_id=tid("a"), void=False, amount_cents=499),
            PENDING,
            None,
            R.OK,
        ),
        (
            resolution_of(PENDING, transfer_id=tid("a"), void=False),
            None,
            None,
            R.PENDING_TRANSFER_NOT_FOUND,
        ),
        (
            resolution_of(PENDING, transfer_id=tid("a"), void=False),
            msgspec.structs.replace(PENDING, kind=TransferKind.POSTED),
            None,
            R.PENDING_TRANSFER_NOT_PENDING,
        ),
        (
            resolution_of(PENDING, transfer_id=tid("a"), void=False),
            PENDING,
            resolution_of(PENDING, transfer_id=tid("b"), void=False),
            R.PENDING_TRANSFER_ALREADY_POSTED,
        ),
        (
            resolution_of(PENDING, transfer_id=tid("a"), void=False),
            PENDING,
            resolution_of(PENDING, transfer_id=tid("b"), void=True),
            R.PENDING_TRANSFER_ALREADY_VOIDED,
        ),
        (
            resolution_of(PENDING, transfer_id=tid("a"), void=False, amount_cents=501),
            PENDING,
            None,
            R.EXCEEDS_PENDING_TRANSFER_AMOUNT,
        ),
        (
            msgspec.structs.replace(
                resolution_of(PENDING, transfer_id=tid("a"), void=True), amount_cents=10
            ),
            PENDING,
            None,
            R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT,
        ),
        (
            msgspec.structs.replace(
                resolution_of(PENDING, transfer_id=tid("a"), void=False),
                debit_account="suspense_kes",
            ),
            PENDING,
            None,
            R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT,
        ),
        (
            msgspec.structs.replace(
                resolution_of(PENDING, transfer_id=tid("a"), void=False),
                credit_account="suspense_kes",
            ),
            PENDING,
            None,
            R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT,
        ),
        (
            msgspec.structs.replace(
                resolution_of(PENDING, transfer_id=tid("a"), void=False), currency=Currency.USD
            ),
            PENDING,
            None,
            R.PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY,
        ),
    ],
)
def test_check_against_pending(post, pending, resolution, code) -> None:  # type: ignore[no-untyped-def]
    assert check_against_pending(post, pending, resolution) is code


def test_admission_counts_posted_pending_and_reserved_against_posted_only() -> None:
    asset = DEFAULT_CHART["mpesa_float"]  # credits must not exceed debits
    liability = DEFAULT_CHART["customer_in_transit_kes"]  # debits must not exceed credits
    b = Balance(debits_posted=1000, credits_posted=300, credits_pending=200, debits_pending=900)
    assert admit(asset, b, Side.CREDIT, 500) is R.OK
    assert admit(asset, b, Side.CREDIT, 501) is R.EXCEEDS_DEBITS
    assert admit(asset, b, Side.CREDIT, 400, reserved_credits_cents=101) is R.EXCEEDS_DEBITS
    assert admit(asset, b, Side.DEBIT, 10**9) is R.OK
    b = Balance(credits_posted=1000, credits_pending=5000, debits_posted=600)
    assert admit(liability, b, Side.DEBIT, 400) is R.OK
    assert admit(liability, b, Side.DEBIT, 401) is R.EXCEEDS_CREDITS  # pending credits don't count
    assert admit(liability, b, Side.DEBIT, 300, reserved_debits_cents=101) is R.EXCEEDS_CREDITS
    assert within_flags(liability, b)
    assert not within_flags(liability, Balance(debits_posted=1))
    assert not within_flags(asset, Balance(credits_pending=1))


def test_post_for_less_releases_the_remainder_and_void_releases_all() -> None:
    b = Balance()
    apply_effect(b, Side.DEBIT, TransferKind.PENDING, 500, 0)
    apply_effect(b, Side.DEBIT, TransferKind.POST_PENDING, 300, 500)
    assert b == Balance(debits_posted=300)
    apply_effect(b, Side.CREDIT, TransferKind.PENDING, 70, 0)
    apply_effect(b, Side.CREDIT, TransferKind.VOID_PENDING, 70, 70)
    assert b == Balance(debits_posted=300)


def test_replay_and_trial_balance() -> None:
    p = transfer("p", "customer_in_transit_kes", "mpesa_float", 500, kind=TransferKind.PENDING)
    rows = [
        transfer("f", "mpesa_float", "owner_equity_kes", 1000),
        p,
        resolution_of(p, transfer_id=tid("post"), void=False, amount_cents=200),
    ]
    balances = replay_balances(rows)
    assert balances["mpesa_float"] == Balance(debits_posted=1000, credits_posted=200)
    line = trial_balance(DEFAULT_CHART, balances)[Currency.KES]
    assert line.balanced and line.debits_posted == 1200


def test_chart_refuses_bad_specs() -> None:
    with pytest.raises(ConfigurationError):
        AccountSpec(code="Bad Code", name="x", currency=Currency.KES, normal_side=Side.DEBIT)
    with pytest.raises(ConfigurationError):
        AccountSpec(
            code="x",
            name="x",
            currency=Currency.KES,
            normal_side=Side.DEBIT,
            debits_must_not_exceed_credits=True,
            credits_must_not_exceed_debits=True,
        )
    with pytest.raises(ConfigurationError):
        DEFAULT_CHART.extend([DEFAULT_CHART["mpesa_float"]])
    assert {"mpesa_float", "deriv_float", "owner_equity_usd", "rounding_kes"} <= set(DEFAULT_CHART)
