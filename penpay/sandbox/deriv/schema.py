"""Request schemas of the calls the sandbox implements (Deriv ``send.json``).

Each call lists its allowed fields with a check; anything else, a missing
required field or an ill-typed value is ``InputValidationFailed`` with
``details`` naming each offending field, as Deriv does
(``additionalProperties: false``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from penpay.sandbox.deriv.state import DerivApiError

Check = Callable[[object], str | None]
"""Returns why a value is invalid, or ``None`` when it is fine."""


def pattern(regex: str) -> Check:
    compiled = re.compile(regex)

    def check(value: object) -> str | None:
        if not isinstance(value, str):
            return "String expected."
        if compiled.fullmatch(value) is None:
            return f"String does not match {regex}."
        return None

    return check


def integer(low: int, high: int) -> Check:
    def check(value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "Integer expected."
        if not low <= value <= high:
            return f"Integer out of range [{low}, {high}]."
        return None

    return check


def one_of(*allowed: object) -> Check:
    def check(value: object) -> str | None:
        if isinstance(value, bool) or value not in allowed:
            return f"Not one of {list(allowed)}."
        return None

    return check


def number(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return "Number expected."
    if isinstance(value, Decimal) and not value.is_finite():
        return "Number expected."
    return None


def obj(value: object) -> str | None:
    return None if isinstance(value, dict) else "Object expected."


def strings(value: object) -> str | None:
    if isinstance(value, str):
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return None
    return "String or array of strings expected."


FLAG = one_of(0, 1)
DESCRIPTION = pattern(r"[0-9A-Za-z .,'-]{0,250}")
LOGINID = pattern(r"[A-Za-z]+[0-9]+")
CURRENCY = pattern(r"[a-zA-Z0-9]{2,20}")

COMMON: dict[str, Check] = {
    "req_id": integer(1, 2**63 - 1),
    "passthrough": obj,
    "loginid": pattern(r"[A-Za-z]+[0-9]+"),
}

# call -> (fields, required)
SCHEMAS: dict[str, tuple[dict[str, Check], frozenset[str]]] = {
    "ping": ({"ping": one_of(1)}, frozenset({"ping"})),
    "time": ({"time": one_of(1)}, frozenset({"time"})),
    "authorize": (
        {"authorize": pattern(r"[\w\-]{1,128}"), "add_to_login_history": FLAG},
        frozenset({"authorize"}),
    ),
    "balance": (
        {
            "balance": one_of(1),
            "subscribe": FLAG,
            "account": pattern(r"current|all|[A-Za-z]+[0-9]+"),
        },
        frozenset({"balance"}),
    ),
    "forget": ({"forget": pattern(r"[\w-]{32,128}")}, frozenset({"forget"})),
    "forget_all": ({"forget_all": strings}, frozenset({"forget_all"})),
    "statement": (
        {
            "statement": one_of(1),
            "description": FLAG,
            "limit": integer(1, 999),
            "offset": integer(0, 2**31),
            "action_type": one_of(
                "buy",
                "sell",
                "deposit",
                "withdrawal",
                "escrow",
                "adjustment",
                "virtual_credit",
                "transfer",
            ),
            "date_from": integer(0, 2**40),
            "date_to": integer(0, 2**40),
        },
        frozenset({"statement"}),
    ),
    "verify_email": (
        {
            "verify_email": pattern(r"[^@\s]+@[^@\s]+"),
            "type": one_of(
                "partner_account_opening",
                "account_opening",
                "reset_password",
                "paymentagent_withdraw",
                "payment_withdraw",
                "trading_platform_password_reset",
                "request_email",
            ),
            "url_parameters": obj,
        },
        frozenset({"verify_email", "type"}),
    ),
    "paymentagent_details": (
        {"paymentagent_details": one_of(1)},
        frozenset({"paymentagent_details"}),
    ),
    "paymentagent_transfer": (
        {
            "paymentagent_transfer": one_of(1),
            "amount": number,
            "currency": CURRENCY,
            "transfer_to": LOGINID,
            "description": DESCRIPTION,
            "dry_run": FLAG,
        },
        frozenset({"paymentagent_transfer", "amount", "currency", "transfer_to"}),
    ),
    "paymentagent_withdraw": (
        {
            "paymentagent_withdraw": one_of(1),
            "amount": number,
            "currency": CURRENCY,
            "paymentagent_loginid": LOGINID,
            "verification_code": pattern(r"\w{8,128}"),
            "description": DESCRIPTION,
            "dry_run": FLAG,
        },
        frozenset(
            {
                "paymentagent_withdraw",
                "amount",
                "currency",
                "paymentagent_loginid",
                "verification_code",
            }
        ),
    ),
}


def validate(call: str, request: Mapping[str, Any]) -> None:
    """Raise ``InputValidationFailed`` naming every bad field of ``request``."""
    fields, required = SCHEMAS[call]
    problems: dict[str, str] = {}
    for name in sorted(required - request.keys()):
        problems[name] = "Missing required property."
    for name, value in request.items():
        check = fields.get(name) or COMMON.get(name)
        if check is None:
            problems[name] = "Properties not allowed."
            continue
        reason = check(value)
        if reason is not None:
            problems[name] = reason
    if problems:
        raise DerivApiError(
            "InputValidationFailed",
            "Input validation failed: " + ", ".join(problems),
            problems,
        )
