"""What can go wrong talking to Daraja, one class per meaning.

The distinction that matters for money: :class:`DarajaRejected` means Daraja
refused the request and nothing moved; :class:`OutcomeUnknown` means a
money-moving request may or may not have been processed and must be
reconciled (STK Query / Transaction Status), never blindly resent.
"""

from __future__ import annotations

from penpay.errors import PenPayError


class DarajaError(PenPayError):
    """Base class of every Daraja client failure."""


class InvalidPhoneNumber(DarajaError, ValueError):
    """A phone number that is not a Kenyan Safaricom-style MSISDN."""


class InvalidAmount(DarajaError, ValueError):
    """An amount that is not a whole-shilling ``int`` within Daraja's limits."""


class InvalidRequestField(DarajaError, ValueError):
    """A field PenPay was about to send breaks Daraja's rules (length, URL)."""


class DarajaProtocolError(DarajaError):
    """Daraja (or a peer posing as it) sent something we cannot parse."""


class DarajaAuthError(DarajaError):
    """OAuth refused our consumer key/secret (HTTP 400, empty body)."""


class DarajaRejected(DarajaError):
    """Daraja answered with its error envelope: the request was not accepted."""

    def __init__(
        self, error_code: str, message: str, *, http_status: int, request_id: str = ""
    ) -> None:
        super().__init__(
            f"Daraja rejected the request: {error_code} {message!r} (HTTP {http_status})"
        )
        self.error_code = error_code
        self.message = message
        self.http_status = http_status
        self.request_id = request_id


class DuplicateOriginatorConversationID(DarajaRejected):
    """B2C ``500.002.1001``: this OriginatorConversationID was already used.

    The first request with it may well have paid out; reconcile with
    Transaction Status instead of retrying under a new id.
    """


class OutcomeUnknown(DarajaError):
    """A money-moving call whose result we never learned (timeout, lost
    connection, internal server error). The money may have moved."""

    def __init__(self, operation: str, reference: str, reason: str) -> None:
        super().__init__(
            f"{operation} {reference!r}: outcome unknown ({reason}); reconcile before retrying"
        )
        self.operation = operation
        self.reference = reference
        self.reason = reason


class DarajaUnreachable(DarajaError):
    """No connection could be made: the request was never sent."""


class DarajaUnavailable(DarajaError):
    """The circuit breaker is open: Daraja failed repeatedly and we are not
    calling it until the cool-down ends. Answer 503 rather than queueing."""


class DarajaCommunicationError(DarajaError):
    """A query or token request still failed after its bounded retries."""


class CallNotSent(DarajaError):
    """A money call was never processed: no OAuth token could be had for it.

    Either no token could be had before sending, or Daraja rejected the
    token (which proves it did not process the request) and no new one
    could be had. Unlike :class:`OutcomeUnknown`, this is certain: nothing
    was processed at the STK Push or B2C endpoint, so nothing can have happened.
    """


class QueryInconclusive(DarajaError):
    """STK Query kept answering ``500.001.1001`` (in flight, or unknown id):
    not a final state. Poll again later; do not treat it as failed."""

    def __init__(self, checkout_request_id: str, message: str) -> None:
        super().__init__(f"STK query for {checkout_request_id!r} is inconclusive: {message!r}")
        self.checkout_request_id = checkout_request_id
