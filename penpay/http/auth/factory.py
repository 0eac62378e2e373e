"""Build an :class:`AuthService` from settings: keys from the environment or ``var/keys/``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from penpay.engine.clock import Clock, Entropy
from penpay.http.auth.passwords import Passwords
from penpay.http.auth.pii import load_pii_cipher
from penpay.http.auth.service import AuthService
from penpay.http.auth.tokens import TokenAuthority, load_keyset
from penpay.storage.audit import AuditLog
from penpay.storage.identity import UserStore


def build_auth(
    *,
    users: UserStore,
    audit: AuditLog,
    data_dir: Path,
    clock: Clock,
    entropy: Entropy,
    environ: Mapping[str, str] | None = None,
    passwords: Passwords | None = None,
) -> AuthService:
    """The production wiring; reads or creates key files, so call it once at start-up."""
    return AuthService(
        users=users,
        tokens=TokenAuthority(load_keyset(data_dir, environ), clock=clock, entropy=entropy),
        passwords=passwords or Passwords(),
        pii=load_pii_cipher(data_dir, environ),
        audit=audit,
        clock=clock,
        entropy=entropy,
    )
