"""What the HTTP layer needs from the rest of PenPay, gathered in one object."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from penpay.actors.ledger import Ledger
from penpay.actors.payments import Payments
from penpay.engine import ActorSystem
from penpay.http.auth.routes import LimitsProvider, default_limits
from penpay.http.auth.service import AuthService
from penpay.http.callbacks import CallbackDeps
from penpay.http.ratelimit import RateLimiter
from penpay.storage.audit import AuditLog
from penpay.storage.idempotency_keys import IdempotencyStore


class Services(msgspec.Struct, kw_only=True):
    """Handles the routes use; built by :mod:`penpay.server` or by a test."""

    system: ActorSystem
    #: name -> "is it up?"; ``/readyz`` answers 503 when any is False.
    readiness: dict[str, Callable[[], bool]] = msgspec.field(default_factory=dict)
    #: Identity: users, tokens, passwords, PII keys. None: every authenticated
    #: route answers 401 (and identity routes 503); nothing is ever let through.
    auth: AuthService | None = None
    #: The hash-chained audit log (``/admin/audit``); usually the one ``auth`` writes to.
    audit: AuditLog | None = None
    #: Idempotency-Key storage for ``@idempotent`` routes; None: those routes answer 503.
    idempotency: IdempotencyStore | None = None
    #: GCRA limiter; None: no limits are applied and no ``X-RateLimit-*`` headers are sent.
    rate_limiter: RateLimiter | None = None
    #: The user's deposit/withdrawal limits and today's usage, for ``GET /me``.
    limits_for: LimitsProvider = default_limits
    #: Deposits, withdrawals and transactions; None: those routes answer 503.
    payments: Payments | None = None
    #: Daraja callback checks (tokens, source allow-list, raw store); None: 404.
    callbacks: CallbackDeps | None = None
    #: The ledger, for the admin ledger routes; None: they answer 503.
    ledger: Ledger | None = None
    #: The providers' own float balances, for ``/admin/reconciliation``.
    provider_balances: Callable[[], Awaitable[dict[str, int | None]]] | None = None
