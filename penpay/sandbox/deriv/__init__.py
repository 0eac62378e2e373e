"""A fake Deriv (legacy WebSocket v3, protocols.md §2) for tests, demos and benchmarks.

``DerivWorld`` holds the state and is the Python control API;
``serve_deriv_sandbox`` serves it over real WebSockets, ``InProcessDerivSandbox``
over in-memory pairs, and ``control_app`` over HTTP (``/__sandbox__/deriv/...``).
See doc/sandbox-deriv.md.
"""

from penpay.sandbox.deriv.control import control_app, serve_control_api
from penpay.sandbox.deriv.server import (
    DerivSandboxAddress,
    InProcessDerivSandbox,
    serve_deriv_sandbox,
)
from penpay.sandbox.deriv.state import (
    Account,
    ClientWithdrawalCaps,
    DerivApiError,
    DerivWorld,
    Fault,
    FaultKind,
    Mail,
    MoneyMove,
    PaymentAgentTerms,
    StatementEntry,
)

__all__ = [
    "Account",
    "ClientWithdrawalCaps",
    "DerivApiError",
    "DerivSandboxAddress",
    "DerivWorld",
    "Fault",
    "FaultKind",
    "InProcessDerivSandbox",
    "Mail",
    "MoneyMove",
    "PaymentAgentTerms",
    "StatementEntry",
    "control_app",
    "serve_control_api",
    "serve_deriv_sandbox",
]
