"""What clients see of a transaction: the JSON shape of API.md, from actor state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from penpay.actors.deposit import DepositState
from penpay.actors.fx import format_rate
from penpay.actors.withdrawal import WithdrawalState


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def mask_phone(e164_digits: str) -> str:
    """``254712345678`` -> ``+2547****5678``: enough to recognise, not to dial."""
    digits = e164_digits.lstrip("+")
    if len(digits) < 8:
        return "****"
    return f"+{digits[:4]}****{digits[-4:]}"


def transaction_view(state: DepositState | WithdrawalState) -> dict[str, Any]:
    quote = state.quote
    assert quote is not None, "a transaction that never started has no view"
    is_deposit = isinstance(state, DepositState)
    checkout = state.checkout_request_id if isinstance(state, DepositState) else None
    return {
        "transaction_id": state.transaction_id,
        "type": "deposit" if is_deposit else "withdrawal",
        "status": state.status.value,
        "amount": {"usd_cents": quote.usd_cents, "kes_cents": quote.kes_cents},
        "rate": {
            "kes_per_usd": format_rate(quote.rate_kes_cents_per_usd),
            "locked_at": rfc3339(quote.locked_at_ms),
            "expires_at": rfc3339(quote.expires_at_ms),
        },
        "phone_number": mask_phone(state.phone),
        "deriv_login_id": state.deriv_login_id,
        "mpesa": {"checkout_request_id": checkout, "receipt_number": state.mpesa_receipt},
        "deriv": {"transaction_id": state.deriv_transaction_id},
        "failure": (
            {"code": state.failure.code, "detail": state.failure.detail}
            if state.failure is not None
            else None
        ),
        "created_at": rfc3339(state.created_at_ms),
        "updated_at": rfc3339(state.updated_at_ms),
        "history": [{"status": h.status.value, "at": rfc3339(h.at_ms)} for h in state.history],
    }
