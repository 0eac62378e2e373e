"""What can go wrong talking to Deriv, one class per thing the caller must do differently.

- :class:`DerivApiError` (and subclasses): Deriv answered with an error. The
  call was processed and refused; ``code``/``message`` are Deriv's. Note that
  a ``PaymentAgentTransferError`` whose message starts with "We have deducted"
  means money *did* leave the agent: see :attr:`DerivApiError.money_may_have_moved`.
- :class:`OutcomeUnknown`: a money-moving request may or may not have been
  applied (socket dropped or timed out after it was sent). Never resend it;
  settle it with ``DerivGateway.find_transfer`` / the statement.
- :class:`DerivUnavailable`: nothing was sent (no connection, or a read-only
  call failed); retrying is safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from penpay.errors import PenPayError


class DerivError(PenPayError):
    """Base class of every Deriv gateway failure."""


class DerivUnavailable(DerivError):
    """No usable connection to Deriv, or a non-money call was lost; safe to retry."""


class NotSent(DerivUnavailable):
    """The request was never handed to the socket (no connection); safe to retry."""


class ConnectionLost(DerivUnavailable):
    """The socket closed after the request was sent and before its answer.

    For a read-only call a retry is safe; money calls turn this into
    :class:`OutcomeUnknown`.
    """


class DerivTimeout(DerivUnavailable):
    """No answer within the request's timeout (money calls: :class:`OutcomeUnknown`)."""


class RequestInvalid(DerivError, ValueError):
    """The caller's arguments cannot form a valid request; nothing was sent."""


class ReconciliationIncomplete(DerivError):
    """A statement search hit its page limit before reaching the end; narrow it."""


class ProtocolViolation(DerivError):
    """Deriv sent something this client cannot interpret (a bug on one side)."""


class OutcomeUnknown(DerivError):
    """A money-moving call was sent but its result never arrived.

    The transfer may or may not have happened. It must NOT be resent: find it
    in the agent's statement by its reference (``DerivGateway.find_transfer``).
    """

    def __init__(self, call: str, reason: str, request: Mapping[str, Any]) -> None:
        super().__init__(f"{call}: outcome unknown ({reason}); reconcile before any retry")
        self.call = call
        self.reason = reason
        self.request = dict(request)


class DerivApiError(DerivError):
    """Deriv answered ``{"error": {code, message, details}}``."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        msg_type: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.msg_type = msg_type
        self.details = dict(details) if details else {}

    @property
    def money_may_have_moved(self) -> bool:
        """True for Deriv's ``TransferReceiveFailed``: "We have deducted …"."""
        return self.message.startswith("We have deducted")


class InvalidToken(DerivApiError):
    """The API token or verification code is invalid or expired."""


class BadSession(DerivApiError):
    """The verification code was issued for another e-mail/session."""


class AuthorizationRequired(DerivApiError):
    """A call that needs ``authorize`` was made before it."""


class PermissionDenied(DerivApiError):
    """The token lacks the scope, or the account is virtual."""


class InputValidationFailed(DerivApiError):
    """The request broke Deriv's schema; ``details`` names the fields."""


class RateLimited(DerivApiError):
    """``RateLimit`` / ``RateLimitExceeded``: back off before calling again."""


class AlreadySubscribed(DerivApiError):
    """A second identical stream subscription on one connection."""


class PaymentAgentTransferError(DerivApiError):
    """``paymentagent_transfer`` was refused; ``message`` says why."""


class PaymentAgentWithdrawError(DerivApiError):
    """``paymentagent_withdraw`` was refused; ``message`` says why."""


_BY_CODE: dict[str, type[DerivApiError]] = {
    "InvalidToken": InvalidToken,
    "BadSession": BadSession,
    "AuthorizationRequired": AuthorizationRequired,
    "PermissionDenied": PermissionDenied,
    "InputValidationFailed": InputValidationFailed,
    "RateLimit": RateLimited,
    "RateLimitExceeded": RateLimited,
    "AlreadySubscribed": AlreadySubscribed,
    "PaymentAgentTransferError": PaymentAgentTransferError,
    "PaymentAgentWithdrawError": PaymentAgentWithdrawError,
}


def api_error(error: Mapping[str, Any], msg_type: str) -> DerivApiError:
    """The precise exception for a Deriv ``error`` object."""
    code = str(error.get("code", "UnknownError"))
    details = error.get("details")
    cls = _BY_CODE.get(code, DerivApiError)
    return cls(
        code,
        str(error.get("message", "")),
        msg_type=msg_type,
        details=details if isinstance(details, dict) else None,
    )
