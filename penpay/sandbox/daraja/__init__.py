"""A local Safaricom Daraja (M-Pesa) that behaves like the real one.

OAuth, STK Push + callback + Query, B2C (v3 and v1), Transaction Status and
Account Balance, with scriptable customers, fault injection, money records
and a ``/__sandbox__/`` control API (see ``doc/sandbox-daraja.md``).

In-process::

    async with DarajaSandbox(callback_http=receiver_client) as sandbox:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(sandbox.app),
                                 base_url="http://daraja.sandbox")

Over sockets::

    sandbox, url = await nursery.start(serve_daraja_sandbox, "127.0.0.1", 0)
"""

from penpay.sandbox.daraja.callbacks import CallbackRecord
from penpay.sandbox.daraja.config import Credentials, DarajaSandboxConfig
from penpay.sandbox.daraja.sandbox import DarajaSandbox
from penpay.sandbox.daraja.server import serve_daraja_sandbox
from penpay.sandbox.daraja.state import (
    Accounts,
    Behaviour,
    Collection,
    Customer,
    Endpoint,
    FaultKind,
    FaultRule,
    Payout,
)

__all__ = [
    "Accounts",
    "Behaviour",
    "CallbackRecord",
    "Collection",
    "Credentials",
    "Customer",
    "DarajaSandbox",
    "DarajaSandboxConfig",
    "Endpoint",
    "FaultKind",
    "FaultRule",
    "Payout",
    "serve_daraja_sandbox",
]
