"""Identity for tests: an in-memory :class:`AuthService` and ready-made Bearer headers.

Tests of routes behind :func:`~penpay.http.auth.guards.admin_only` need a
token of an operator the store knows; these helpers make one without a
login round trip::

    auth = memory_auth()
    app = create_app(Services(system=system, auth=auth, audit=auth.audit))
    client.get("/api/v1/admin/actors", headers=await operator_headers(auth))

Argon2 runs with toy parameters here; never use this outside tests.
"""

from __future__ import annotations

import uuid

import argon2

from penpay.engine.clock import Clock, Entropy
from penpay.http.auth.passwords import Passwords
from penpay.http.auth.pii import PiiCipher
from penpay.http.auth.service import AuthService, create_admin
from penpay.http.auth.tokens import KeySet, TokenAuthority, generate_signing_key
from penpay.storage.audit import MemoryAuditLog
from penpay.storage.identity import MemoryUserStore

_keyset: KeySet | None = None


def shared_keyset() -> KeySet:
    """One RSA key per test process (generating one takes ~50 ms)."""
    global _keyset
    if _keyset is None:
        _keyset = KeySet(generate_signing_key())
    return _keyset


def memory_auth(clock: Clock | None = None, entropy: Entropy | None = None) -> AuthService:
    """An :class:`AuthService` over in-memory stores with throwaway keys."""
    clock = clock or Clock()
    entropy = entropy or Entropy()
    return AuthService(
        users=MemoryUserStore(),
        tokens=TokenAuthority(shared_keyset(), clock=clock, entropy=entropy),
        passwords=Passwords(argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)),
        pii=PiiCipher({1: entropy.token_bytes(32)}, entropy.token_bytes(32)),
        audit=MemoryAuditLog(clock),
        clock=clock,
        entropy=entropy,
    )


async def operator_headers(auth: AuthService) -> dict[str, str]:
    """``Authorization: Bearer …`` of a new, active operator in ``auth``'s store."""
    user_id = await create_admin(
        auth, f"operator-{uuid.uuid4().hex[:12]}@penpay.example", "an-operator-password-1"
    )
    return bearer_headers(auth, role="admin", user_id=uuid.UUID(user_id))


def bearer_headers(
    auth: AuthService, *, role: str = "user", user_id: uuid.UUID | None = None
) -> dict[str, str]:
    """``Authorization: Bearer …`` for a (possibly non-existent) user with ``role``."""
    subject = str(user_id or uuid.uuid4())
    return {"Authorization": f"Bearer {auth.tokens.issue(subject=subject, role=role)}"}
