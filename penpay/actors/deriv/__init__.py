"""PenPay's Deriv gateway (legacy WebSocket v3 API, protocols.md §2).

The public surface: :class:`DerivGateway` and its result types, the
exceptions, and the transport seam (connectors) shared with the sandbox.
"""

from penpay.actors.deriv.errors import (
    AlreadySubscribed,
    AuthorizationRequired,
    BadSession,
    ConnectionLost,
    DerivApiError,
    DerivError,
    DerivTimeout,
    DerivUnavailable,
    InputValidationFailed,
    InvalidToken,
    NotSent,
    OutcomeUnknown,
    PaymentAgentTransferError,
    PaymentAgentWithdrawError,
    PermissionDenied,
    ProtocolViolation,
    RateLimited,
    ReconciliationIncomplete,
    RequestInvalid,
)
from penpay.actors.deriv.gateway import (
    DerivAccountInfo,
    DerivGateway,
    FoundTransfer,
    GatewayConfig,
    TransferResult,
    WithdrawalResult,
)
from penpay.actors.deriv.transport import (
    Connector,
    MessageConnection,
    TransportClosed,
    memory_pair,
    websocket_connector,
)

__all__ = [
    "AlreadySubscribed",
    "AuthorizationRequired",
    "BadSession",
    "ConnectionLost",
    "Connector",
    "DerivAccountInfo",
    "DerivApiError",
    "DerivError",
    "DerivGateway",
    "DerivTimeout",
    "DerivUnavailable",
    "FoundTransfer",
    "GatewayConfig",
    "InputValidationFailed",
    "InvalidToken",
    "MessageConnection",
    "NotSent",
    "OutcomeUnknown",
    "PaymentAgentTransferError",
    "PaymentAgentWithdrawError",
    "PermissionDenied",
    "ProtocolViolation",
    "RateLimited",
    "ReconciliationIncomplete",
    "RequestInvalid",
    "TransferResult",
    "TransportClosed",
    "WithdrawalResult",
    "memory_pair",
    "websocket_connector",
]
