"""PenPay's client for Safaricom Daraja (M-Pesa).

:class:`DarajaClient` makes the calls; :mod:`.schemas` parses what Daraja
sends back (sync answers and callbacks) into exact, typed values;
:func:`normalize_msisdn` canonicalises phone numbers.
"""

from penpay.actors.daraja.breaker import BreakerState, CircuitBreaker
from penpay.actors.daraja.client import DarajaClient
from penpay.actors.daraja.config import DarajaClientConfig
from penpay.actors.daraja.errors import (
    CallNotSent,
    DarajaAuthError,
    DarajaCommunicationError,
    DarajaError,
    DarajaProtocolError,
    DarajaRejected,
    DarajaUnavailable,
    DarajaUnreachable,
    DuplicateOriginatorConversationID,
    InvalidAmount,
    InvalidPhoneNumber,
    InvalidRequestField,
    OutcomeUnknown,
    QueryInconclusive,
)
from penpay.actors.daraja.phone import normalize_msisdn
from penpay.actors.daraja.schemas import (
    STK_CALLBACK_ACK,
    AccountBalance,
    AccountBalanceResult,
    AsyncAccepted,
    B2CResult,
    DarajaResult,
    StkCallback,
    StkPushAccepted,
    StkQueryResponse,
    TransactionStatusResult,
    parse_account_balance_result,
    parse_b2c_result,
    parse_balance_string,
    parse_result,
    parse_stk_callback,
    parse_transaction_status_result,
)

__all__ = [
    "STK_CALLBACK_ACK",
    "AccountBalance",
    "AccountBalanceResult",
    "AsyncAccepted",
    "B2CResult",
    "BreakerState",
    "CallNotSent",
    "CircuitBreaker",
    "DarajaAuthError",
    "DarajaClient",
    "DarajaClientConfig",
    "DarajaCommunicationError",
    "DarajaError",
    "DarajaProtocolError",
    "DarajaRejected",
    "DarajaResult",
    "DarajaUnavailable",
    "DarajaUnreachable",
    "DuplicateOriginatorConversationID",
    "InvalidAmount",
    "InvalidPhoneNumber",
    "InvalidRequestField",
    "OutcomeUnknown",
    "QueryInconclusive",
    "StkCallback",
    "StkPushAccepted",
    "StkQueryResponse",
    "TransactionStatusResult",
    "normalize_msisdn",
    "parse_account_balance_result",
    "parse_b2c_result",
    "parse_balance_string",
    "parse_result",
    "parse_stk_callback",
    "parse_transaction_status_result",
]
