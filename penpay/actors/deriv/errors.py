"""What can go wrong talking to Deriv, one class per thing the caller must do differently.

- :class:`DerivApiError` (and subclasses): Deriv answered with an error;
  ``code``/``message`` are Deriv's. For a money call an error does NOT prove
  that nothing moved ("We have deducted …", an output that failed Deriv's own
  schema after the work was done): :func:`money_call_verdict` says what it
  proves.
- :class:`OutcomeUnknown`: a money-moving request may or may not have been
  applied (socket dropped or timed out after it was sent). Never resend it;
  settle it with ``DerivGateway.find_transfer`` / the statement.
- :class:`DerivUnavailable`: nothing was sent (no connection, or a read-only
  call failed); retrying is safe.
"""

from __future__ import annotations

import enum
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
        """True unless this error, answering a money call, proves nothing moved.

        See :func:`money_call_verdict`.
        """
        return money_call_verdict(self) is MoneyCallVerdict.MAY_HAVE_MOVED


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


class MoneyCallVerdict(enum.Enum):
    """What an error answering ``paymentagent_transfer``/``_withdraw`` proves."""

    #: Refused before any money moved; calling again would be refused again.
    NOT_DONE = "not_done"
    #: Refused for now (rate limit, "Request too frequent", maintenance) before
    #: any money moved: the same call may be sent again later.
    RETRY_LATER = "retry_later"
    #: Nothing is proven: money may have moved. Settle it from the statement.
    MAY_HAVE_MOVED = "may_have_moved"


#: Codes Deriv raises before a money call does any work (protocols.md 2.10):
#: the token or verification-code check, the scope check, the session check and
#: the request's schema all run ahead of the RPC's business code, and
#: ``ASK_FIX_DETAILS`` refuses an agent whose profile is incomplete up front (2.7).
_NOT_DONE_CODES = frozenset({
    "InvalidToken", "BadSession", "PermissionDenied", "AuthorizationRequired",
    "InputValidationFailed", "ASK_FIX_DETAILS",
})

#: Rate limits (protocols.md 2.10/2.11): the WebSocket layer (``RateLimit``) or
#: the RPC's entry (``RateLimitExceeded``) refuses the call before it runs, so
#: before even a withdrawal's verification code is checked (and deleted, 2.8).
REFUSED_BEFORE_ANY_CHECK = frozenset({"RateLimit", "RateLimitExceeded"})

#: The codes under which Deriv reports every business outcome of the two money
#: calls, whatever happened (protocols.md 2.7, 2.8: the rule engine's own codes
#: are overridden), so only the message tells a refusal from a failure mid-way.
_PA_CODES = frozenset({"PaymentAgentTransferError", "PaymentAgentWithdrawError"})

#: Messages (lower case) of failures *during* the transfer (protocols.md 2.7,
#: step 12): ``TransferReceiveFailed`` "We have deducted …", ``TransferRevertFailed``
#: "…unexpected error. Please contact us…", and the catch-all "Sorry, an error
#: occurred whilst processing your request…". The money may have moved.
_MAY_HAVE_MOVED_MARKERS = ("deducted", "unexpected error", "error occurred", "contact us")

#: Messages (lower case) of temporary refusals made before the transfer: BI102
#: "Request too frequent. Please try again later." and "Sorry, this facility is
#: temporarily disabled due to system maintenance." (protocols.md 2.7 steps 3, 12).
_RETRY_MARKERS = ("request too frequent", "temporarily disabled due to system maintenance")


def money_call_verdict(error: DerivApiError) -> MoneyCallVerdict:
    """What Deriv's error answer to ``paymentagent_transfer``/``_withdraw`` proves.

    Deriv's money calls have no idempotency key (protocols.md section 0, point
    6), so refunding a deposit (or failing a withdrawal) on an error that does
    not prove the call did nothing can pay the customer twice. Hence an
    allow-list: only the errors of protocols.md 2.10 that Deriv raises before
    any work (:data:`_NOT_DONE_CODES`), and the business refusals of the
    ``PaymentAgent*Error`` family (2.7 steps 1-10, 2.8 checks) prove nothing
    moved; rate limits and the temporary refusals of :data:`_RETRY_MARKERS`
    prove it too, and may be retried. Everything else may have moved money:
    a ``PaymentAgent*Error`` raised during the transfer
    (:data:`_MAY_HAVE_MOVED_MARKERS`), ``OutputValidationFailed`` (Deriv's own
    answer failed its schema after the work was done, 2.10), and any code not
    named here. The statement settles those.
    """
    if error.code in REFUSED_BEFORE_ANY_CHECK:
        return MoneyCallVerdict.RETRY_LATER
    if error.code in _NOT_DONE_CODES:
        return MoneyCallVerdict.NOT_DONE
    if error.code not in _PA_CODES:
        return MoneyCallVerdict.MAY_HAVE_MOVED
    message = error.message.lower()
    if any(marker in message for marker in _MAY_HAVE_MOVED_MARKERS):
        return MoneyCallVerdict.MAY_HAVE_MOVED
    if any(marker in message for marker in _RETRY_MARKERS):
        return MoneyCallVerdict.RETRY_LATER
    return MoneyCallVerdict.NOT_DONE
