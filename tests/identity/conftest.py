"""Fixtures for identity tests: a wired app over in-memory or PostgreSQL stores.

``backend`` is parametrised: every test that uses it runs against the
in-memory twins and against a fresh migrated PostgreSQL database (marked
``storage``). Password hashing uses cheap Argon2 parameters so the suite is
fast; the production parameters are tested once in ``test_passwords.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import argon2
import pytest

from penpay.engine import ActorSystem, open_actor_system
from penpay.engine.clock import Clock, Entropy
from penpay.http import Services
from penpay.http.auth.passwords import Passwords
from penpay.http.auth.pii import PiiCipher
from penpay.http.auth.service import AuthService, create_admin
from penpay.http.auth.tokens import KeySet, TokenAuthority, generate_signing_key
from penpay.http.ratelimit import RateLimiter
from penpay.storage.audit import AuditLog, MemoryAuditLog, PgAuditLog
from penpay.storage.idempotency_keys import (
    IdempotencyStore,
    MemoryIdempotencyStore,
    PgIdempotencyStore,
)
from penpay.storage.identity import MemoryUserStore, PgUserStore, UserStore
from penpay.storage.pg import Database
from penpay.storage.testing import migrated_database, test_database_admin_url

ADMIN_EMAIL = "ops@penpay.example"
ADMIN_PASSWORD = "operator-password-1"


def fast_passwords() -> Passwords:
    return Passwords(argon2.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))


@pytest.fixture(scope="session")
def keyset() -> KeySet:
    return KeySet(generate_signing_key())


@pytest.fixture(scope="session")
def pii() -> PiiCipher:
    return PiiCipher({1: bytes(range(32))}, bytes(range(32, 64)))


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return test_database_admin_url()


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with open_actor_system() as system:
        yield system


@dataclass
class Stores:
    users: UserStore
    audit: AuditLog
    idempotency: IdempotencyStore
    clock: Clock
    db: Database | None = None


@pytest.fixture(params=["memory", pytest.param("pg", marks=pytest.mark.storage)])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    clock = Clock(wall_anchor=datetime.now(UTC))
    if request.param == "memory":
        yield Stores(MemoryUserStore(), MemoryAuditLog(clock), MemoryIdempotencyStore(), clock)
        return
    admin_url = request.getfixturevalue("pg_admin_url")
    async with migrated_database(admin_url) as db:
        yield Stores(PgUserStore(db), PgAuditLog(db, clock), PgIdempotencyStore(db), clock, db)


def build_services(
    system: ActorSystem,
    stores: Stores,
    keyset: KeySet,
    pii: PiiCipher,
    *,
    rate_limiter: RateLimiter | None = None,
    seed: int | None = None,
) -> Services:
    entropy = Entropy(seed)
    auth = AuthService(
        users=stores.users,
        tokens=TokenAuthority(keyset, clock=stores.clock, entropy=entropy),
        passwords=fast_passwords(),
        pii=pii,
        audit=stores.audit,
        clock=stores.clock,
        entropy=entropy,
    )
    return Services(
        system=system,
        auth=auth,
        audit=stores.audit,
        idempotency=stores.idempotency,
        rate_limiter=rate_limiter,
    )


@pytest.fixture
def services(system: ActorSystem, stores: Stores, keyset: KeySet, pii: PiiCipher) -> Services:
    return build_services(system, stores, keyset, pii)


async def make_admin(services: Services) -> str:
    assert services.auth is not None
    return await create_admin(services.auth, ADMIN_EMAIL, ADMIN_PASSWORD)
