"""The ``limits`` object of ``GET /me``: what a user may move, and what they moved today.

It is read from the same :class:`~penpay.actors.policy.Limits` and daily usage
that :class:`~penpay.actors.payments.Payments` admits requests by, so the
numbers a client shows are the numbers it will be held to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from penpay.actors.fx import TransactionType
from penpay.actors.payments import Payments, User


async def me_limits(payments: Payments, user: User) -> dict[str, Any]:
    """API.md's ``limits:{deposit:{…}, withdrawal:{…}}`` for ``user``, amounts in USD cents."""
    return {type.value: await _one(payments, user, type) for type in TransactionType}


async def _one(payments: Payments, user: User, type: TransactionType) -> dict[str, int]:
    low, high = payments.limits.bounds(type)
    return {
        "min_cents": low,
        "max_cents": high,
        "daily_cents": payments.limits.daily_cap_usd_cents,
        "used_today_cents": await payments.used_today(user, type),
    }


def limits_provider(payments: Payments) -> Callable[[User], Awaitable[dict[str, Any]]]:
    """``Services.limits_for`` bound to ``payments`` (the HTTP layer passes only the user)."""

    async def limits_for(user: User) -> dict[str, Any]:
        return await me_limits(payments, user)

    return limits_for
