"""Who may move how much: per-transaction limits and daily caps, all configurable."""

from __future__ import annotations

import msgspec

from penpay.actors.fx import TransactionType


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Amounts in USD cents (API.md defaults)."""

    deposit_min_usd_cents: int = 200
    deposit_max_usd_cents: int = 100_000
    withdrawal_min_usd_cents: int = 500
    withdrawal_max_usd_cents: int = 100_000
    daily_cap_usd_cents: int = 200_000

    def within(self, low: int, high: int) -> Limits:
        """These limits narrowed to ``[low, high]`` per transaction (a payment agent's
        terms: Deriv refuses a transfer or a withdrawal outside them)."""
        return msgspec.structs.replace(
            self,
            deposit_min_usd_cents=max(self.deposit_min_usd_cents, low),
            deposit_max_usd_cents=min(self.deposit_max_usd_cents, high),
            withdrawal_min_usd_cents=max(self.withdrawal_min_usd_cents, low),
            withdrawal_max_usd_cents=min(self.withdrawal_max_usd_cents, high),
        )

    def bounds(self, type: TransactionType) -> tuple[int, int]:
        if type is TransactionType.DEPOSIT:
            return self.deposit_min_usd_cents, self.deposit_max_usd_cents
        return self.withdrawal_min_usd_cents, self.withdrawal_max_usd_cents

    def refusal(
        self, type: TransactionType, usd_cents: int, used_today_usd_cents: int
    ) -> tuple[str, str] | None:
        """``(code, detail)`` when the amount is not allowed, else None."""
        low, high = self.bounds(type)
        if usd_cents < low:
            return "amount_below_minimum", f"the minimum {type} is {low} USD cents"
        if usd_cents > high:
            return "amount_above_maximum", f"the maximum {type} is {high} USD cents"
        if used_today_usd_cents + usd_cents > self.daily_cap_usd_cents:
            left = max(self.daily_cap_usd_cents - used_today_usd_cents, 0)
            return "daily_limit_exceeded", f"{left} USD cents of today's {type} limit remain"
        return None
