"""Users, devices and refresh tokens: the :class:`UserStore` port and its two adapters.

:class:`PgUserStore` keeps them in PostgreSQL (``migrations/0200_identity.sql``);
:class:`MemoryUserStore` is its in-memory twin for unit tests and the
deterministic simulation. Both pass ``tests/identity/test_stores.py``.

The store never sees a clear phone number, Deriv token or refresh token: the
auth layer hands it ciphertexts, blind indexes and sha256 hashes. Operations
that must be atomic (starting a session under the device limit, rotating a
refresh token) are single store calls, so no caller can interleave them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Literal, Protocol

import msgspec

from penpay.errors import PenPayError
from penpay.storage.pg import Connection, Database, QueryFailed, Record

UserStatus = Literal["pending", "active", "suspended", "closed"]
Role = Literal["user", "admin"]
USER_STATUSES: tuple[str, ...] = ("pending", "active", "suspended", "closed")
ROLES: tuple[str, ...] = ("user", "admin")

_UNIQUE_VIOLATION = "23505"


def normalize_email(email: str) -> str:
    """The one form an e-mail is stored, looked up and compared in.

    Python's ``str.lower`` and PostgreSQL's ``lower()`` disagree: ``ΟΔΟΣ``
    ends in final sigma (U+03C2) here but U+03C3 there, and ``İ`` becomes
    ``i`` + U+0307 here but plain ``i`` there. So the database never folds
    case: both stores and the auth layer call this, and SQL compares the
    stored value with ``=`` (``migrations/0230_users_email_key.sql``).
    ``str.lower`` (not ``casefold``) is what every stored row was written
    with, so existing rows stay reachable.
    """
    return email.lower()


class User(msgspec.Struct, frozen=True, kw_only=True):
    """One account. ``phone_ciphertext`` is AES-GCM output; see :mod:`penpay.http.auth.pii`."""

    id: uuid.UUID
    email: str
    phone_ciphertext: bytes | None
    phone_key_version: int | None
    phone_blind_index: bytes | None
    password_hash: str
    status: UserStatus = "pending"
    kyc_tier: int = 0
    role: Role = "user"
    deriv_login_id: str | None = None
    deriv_currency: str | None = None
    deriv_full_name: str | None = None
    deriv_token_ciphertext: bytes | None = None
    deriv_token_key_version: int | None = None
    created_at: datetime
    updated_at: datetime


def _normalized(user: User) -> User:
    """``user`` with its e-mail in stored form, so both stores keep the same value."""
    email = normalize_email(user.email)
    return user if email == user.email else msgspec.structs.replace(user, email=email)


class RefreshToken(msgspec.Struct, frozen=True, kw_only=True):
    """A refresh token as stored: its sha256, its family and whether it is used up."""

    token_hash: bytes
    user_id: uuid.UUID
    device_id: str
    family_id: uuid.UUID
    parent_hash: bytes | None
    created_at: datetime
    expires_at: datetime
    spent_at: datetime | None = None
    revoked_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        return self.spent_at is None and self.revoked_at is None and self.expires_at > now


class RotateOutcome(msgspec.Struct, frozen=True):
    """What :meth:`UserStore.rotate_refresh` did.

    ``rotated``: ``token`` is the new child. ``reused``: the presented token
    was already spent, and its family (``token`` is the presented one) has
    now been revoked. ``invalid``: unknown, expired or revoked; nothing changed.
    """

    kind: Literal["rotated", "reused", "invalid"]
    token: RefreshToken | None = None


class IdentityError(PenPayError):
    """Base class of identity-store failures."""


class EmailTaken(IdentityError):
    """Another user already has this e-mail address (compared case-insensitively)."""


class UserNotFound(IdentityError):
    """No user has this id."""


class UserStore(Protocol):
    """Persistence of users, devices and refresh tokens."""

    async def create_user(self, user: User) -> None:
        """Insert ``user`` with its e-mail normalised (:func:`normalize_email`);
        raises :class:`EmailTaken` if that e-mail is in use."""

    async def get_user(self, user_id: uuid.UUID) -> User | None: ...

    async def find_by_email(self, email: str) -> User | None:
        """Case-insensitive lookup: ``email`` is compared after :func:`normalize_email`."""

    async def find_by_phone_index(self, blind_index: bytes) -> list[User]:
        """Candidates whose phone has this blind index (decrypt to confirm)."""

    async def set_password_hash(
        self, user_id: uuid.UUID, password_hash: str, now: datetime
    ) -> None:
        ...

    async def set_status(self, user_id: uuid.UUID, status: UserStatus, now: datetime) -> User:
        """Change the status; returns the updated user or raises :class:`UserNotFound`."""

    async def set_role(self, user_id: uuid.UUID, role: Role, now: datetime) -> User: ...

    async def set_deriv_link(
        self,
        user_id: uuid.UUID,
        *,
        login_id: str,
        currency: str,
        full_name: str,
        token_ciphertext: bytes,
        token_key_version: int,
        now: datetime,
    ) -> User: ...

    async def start_session(self, token: RefreshToken, *, devices_max: int, now: datetime) -> bool:
        """Open a session on ``token.device_id``: revoke that device's earlier sessions,
        record the device and store ``token``. Returns False, changing nothing, if
        the user already has ``devices_max`` other devices with live sessions.
        """

    async def find_refresh(self, token_hash: bytes) -> RefreshToken | None: ...

    async def rotate_refresh(
        self, token_hash: bytes, *, child_hash: bytes, expires_at: datetime, now: datetime
    ) -> RotateOutcome:
        """Spend the token and issue its child atomically; on reuse revoke the family."""

    async def revoke_family(self, family_id: uuid.UUID, now: datetime) -> int: ...

    async def revoke_device(self, user_id: uuid.UUID, device_id: str, now: datetime) -> int: ...

    async def revoke_user(self, user_id: uuid.UUID, now: datetime) -> int:
        """Revoke every session of the user (logout everywhere, suspension)."""

    async def count_live_devices(self, user_id: uuid.UUID, now: datetime) -> int: ...


# --------------------------------------------------------------------------- memory


class MemoryUserStore:
    """In-memory twin of :class:`PgUserStore`; each method runs without awaiting, so
    under trio every call is atomic, as a transaction is in PostgreSQL."""

    def __init__(self) -> None:
        self.users: dict[uuid.UUID, User] = {}
        self.tokens: dict[bytes, RefreshToken] = {}
        self.devices: dict[tuple[uuid.UUID, str], datetime] = {}
        # Secondary indexes, as the database has them: a simulation with
        # thousands of users must not scan them all on every login.
        self._by_email: dict[str, uuid.UUID] = {}
        self._tokens_by_user: dict[uuid.UUID, list[bytes]] = {}

    async def create_user(self, user: User) -> None:
        user = _normalized(user)
        if user.email in self._by_email:
            raise EmailTaken(user.email)
        self.users[user.id] = user
        self._by_email[user.email] = user.id

    async def get_user(self, user_id: uuid.UUID) -> User | None:
        return self.users.get(user_id)

    async def find_by_email(self, email: str) -> User | None:
        user_id = self._by_email.get(normalize_email(email))
        return None if user_id is None else self.users[user_id]

    async def find_by_phone_index(self, blind_index: bytes) -> list[User]:
        return [u for u in self.users.values() if u.phone_blind_index == blind_index]

    def _replace(self, user_id: uuid.UUID, now: datetime, **changes: object) -> User:
        user = self.users.get(user_id)
        if user is None:
            raise UserNotFound(str(user_id))
        updated = msgspec.structs.replace(user, updated_at=now, **changes)
        self.users[user_id] = updated
        return updated

    async def set_password_hash(
        self, user_id: uuid.UUID, password_hash: str, now: datetime
    ) -> None:
        self._replace(user_id, now, password_hash=password_hash)

    async def set_status(self, user_id: uuid.UUID, status: UserStatus, now: datetime) -> User:
        return self._replace(user_id, now, status=status)

    async def set_role(self, user_id: uuid.UUID, role: Role, now: datetime) -> User:
        return self._replace(user_id, now, role=role)

    async def set_deriv_link(
        self,
        user_id: uuid.UUID,
        *,
        login_id: str,
        currency: str,
        full_name: str,
        token_ciphertext: bytes,
        token_key_version: int,
        now: datetime,
    ) -> User:
        return self._replace(
            user_id,
            now,
            deriv_login_id=login_id,
            deriv_currency=currency,
            deriv_full_name=full_name,
            deriv_token_ciphertext=token_ciphertext,
            deriv_token_key_version=token_key_version,
        )

    def _live_devices(self, user_id: uuid.UUID, now: datetime) -> set[str]:
        return {t.device_id for t in self._user_tokens(user_id) if t.live(now)}

    def _user_tokens(self, user_id: uuid.UUID) -> list[RefreshToken]:
        return [self.tokens[h] for h in self._tokens_by_user.get(user_id, ())]

    def _store_token(self, token: RefreshToken) -> None:
        if token.token_hash not in self.tokens:
            self._tokens_by_user.setdefault(token.user_id, []).append(token.token_hash)
        self.tokens[token.token_hash] = token

    async def start_session(self, token: RefreshToken, *, devices_max: int, now: datetime) -> bool:
        others = self._live_devices(token.user_id, now) - {token.device_id}
        if len(others) >= devices_max:
            return False
        await self.revoke_device(token.user_id, token.device_id, now)
        self.devices[(token.user_id, token.device_id)] = now
        self._store_token(token)
        return True

    async def find_refresh(self, token_hash: bytes) -> RefreshToken | None:
        return self.tokens.get(token_hash)

    async def rotate_refresh(
        self, token_hash: bytes, *, child_hash: bytes, expires_at: datetime, now: datetime
    ) -> RotateOutcome:
        old = self.tokens.get(token_hash)
        if old is None or old.revoked_at is not None or old.expires_at <= now:
            return RotateOutcome("invalid")
        if old.spent_at is not None:
            await self.revoke_family(old.family_id, now)
            return RotateOutcome("reused", old)
        self.tokens[token_hash] = msgspec.structs.replace(old, spent_at=now)
        child = RefreshToken(
            token_hash=child_hash,
            user_id=old.user_id,
            device_id=old.device_id,
            family_id=old.family_id,
            parent_hash=token_hash,
            created_at=now,
            expires_at=expires_at,
        )
        self._store_token(child)
        self.devices[(old.user_id, old.device_id)] = now
        return RotateOutcome("rotated", child)

    def _revoke_where(
        self, now: datetime, candidates: list[RefreshToken],
        match: Callable[[RefreshToken], bool],
    ) -> int:
        count = 0
        for token in candidates:
            if token.revoked_at is None and match(token):
                self.tokens[token.token_hash] = msgspec.structs.replace(token, revoked_at=now)
                count += 1
        return count

    async def revoke_family(self, family_id: uuid.UUID, now: datetime) -> int:
        return self._revoke_where(
            now, list(self.tokens.values()), lambda t: t.family_id == family_id
        )

    async def revoke_device(self, user_id: uuid.UUID, device_id: str, now: datetime) -> int:
        return self._revoke_where(
            now, self._user_tokens(user_id), lambda t: t.device_id == device_id
        )

    async def revoke_user(self, user_id: uuid.UUID, now: datetime) -> int:
        return self._revoke_where(now, self._user_tokens(user_id), lambda t: True)

    async def count_live_devices(self, user_id: uuid.UUID, now: datetime) -> int:
        return len(self._live_devices(user_id, now))


# --------------------------------------------------------------------------- PostgreSQL

_USER_COLUMNS = (
    "id, email, phone_ciphertext, phone_key_version, phone_blind_index, password_hash, "
    "status, kyc_tier, role, deriv_login_id, deriv_currency, deriv_full_name, "
    "deriv_token_ciphertext, deriv_token_key_version, created_at, updated_at"
)
_TOKEN_COLUMNS = (
    "token_hash, user_id, device_id, family_id, parent_hash, created_at, expires_at, "
    "spent_at, revoked_at"
)


def _opt_bytes(value: object) -> bytes | None:
    return bytes(value) if value is not None else None  # type: ignore[call-overload]


def _user(row: Record) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        phone_ciphertext=_opt_bytes(row["phone_ciphertext"]),
        phone_key_version=row["phone_key_version"],
        phone_blind_index=_opt_bytes(row["phone_blind_index"]),
        password_hash=row["password_hash"],
        status=row["status"],
        kyc_tier=row["kyc_tier"],
        role=row["role"],
        deriv_login_id=row["deriv_login_id"],
        deriv_currency=row["deriv_currency"],
        deriv_full_name=row["deriv_full_name"],
        deriv_token_ciphertext=_opt_bytes(row["deriv_token_ciphertext"]),
        deriv_token_key_version=row["deriv_token_key_version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _token(row: Record) -> RefreshToken:
    return RefreshToken(
        token_hash=bytes(row["token_hash"]),
        user_id=row["user_id"],
        device_id=row["device_id"],
        family_id=row["family_id"],
        parent_hash=_opt_bytes(row["parent_hash"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        spent_at=row["spent_at"],
        revoked_at=row["revoked_at"],
    )


_LIVE = "spent_at IS NULL AND revoked_at IS NULL AND expires_at > $2"


class PgUserStore:
    """:class:`UserStore` on PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_user(self, user: User) -> None:
        user = _normalized(user)
        try:
            await self._db.execute(
                f"INSERT INTO users ({_USER_COLUMNS}) VALUES "
                "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)",
                user.id, user.email, user.phone_ciphertext, user.phone_key_version,
                user.phone_blind_index, user.password_hash, user.status, user.kyc_tier,
                user.role, user.deriv_login_id, user.deriv_currency, user.deriv_full_name,
                user.deriv_token_ciphertext, user.deriv_token_key_version,
                user.created_at, user.updated_at,
            )  # fmt: skip
        except QueryFailed as exc:
            if exc.sqlstate == _UNIQUE_VIOLATION:
                raise EmailTaken(user.email) from None
            raise

    async def get_user(self, user_id: uuid.UUID) -> User | None:
        row = await self._db.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return _user(row) if row is not None else None

    async def find_by_email(self, email: str) -> User | None:
        row = await self._db.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users WHERE email = $1", normalize_email(email)
        )
        return _user(row) if row is not None else None

    async def find_by_phone_index(self, blind_index: bytes) -> list[User]:
        rows = await self._db.fetch(
            f"SELECT {_USER_COLUMNS} FROM users WHERE phone_blind_index = $1 ORDER BY id",
            blind_index,
        )
        return [_user(r) for r in rows]

    async def _update(self, user_id: uuid.UUID, assignments: str, *args: object) -> User:
        row = await self._db.fetchrow(
            f"UPDATE users SET {assignments} WHERE id = $1 RETURNING {_USER_COLUMNS}",
            user_id, *args,
        )  # fmt: skip
        if row is None:
            raise UserNotFound(str(user_id))
        return _user(row)

    async def set_password_hash(
        self, user_id: uuid.UUID, password_hash: str, now: datetime
    ) -> None:
        await self._update(user_id, "password_hash = $2, updated_at = $3", password_hash, now)

    async def set_status(self, user_id: uuid.UUID, status: UserStatus, now: datetime) -> User:
        return await self._update(user_id, "status = $2, updated_at = $3", status, now)

    async def set_role(self, user_id: uuid.UUID, role: Role, now: datetime) -> User:
        return await self._update(user_id, "role = $2, updated_at = $3", role, now)

    async def set_deriv_link(
        self,
        user_id: uuid.UUID,
        *,
        login_id: str,
        currency: str,
        full_name: str,
        token_ciphertext: bytes,
        token_key_version: int,
        now: datetime,
    ) -> User:
        return await self._update(
            user_id,
            "deriv_login_id = $2, deriv_currency = $3, deriv_full_name = $4, "
            "deriv_token_ciphertext = $5, deriv_token_key_version = $6, updated_at = $7",
            login_id, currency, full_name, token_ciphertext, token_key_version, now,
        )  # fmt: skip

    async def start_session(self, token: RefreshToken, *, devices_max: int, now: datetime) -> bool:
        async with self._db.transaction() as conn:
            # The user row lock serialises concurrent logins of one user, so two
            # new devices cannot both see "one device in use" and both get in.
            await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", token.user_id)
            others = await conn.fetchval(
                f"SELECT count(DISTINCT device_id) FROM refresh_tokens "
                f"WHERE user_id = $1 AND {_LIVE} AND device_id <> $3",
                token.user_id, now, token.device_id,
            )  # fmt: skip
            if others >= devices_max:
                return False
            await conn.execute(
                "UPDATE refresh_tokens SET revoked_at = $3 "
                "WHERE user_id = $1 AND device_id = $2 AND revoked_at IS NULL",
                token.user_id, token.device_id, now,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO devices (user_id, device_id, created_at, last_seen_at) "
                "VALUES ($1, $2, $3, $3) ON CONFLICT (user_id, device_id) "
                "DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at",
                token.user_id, token.device_id, now,
            )  # fmt: skip
            await self._insert_token(conn, token)
        return True

    @staticmethod
    async def _insert_token(conn: Connection, token: RefreshToken) -> None:
        await conn.execute(
            f"INSERT INTO refresh_tokens ({_TOKEN_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
            token.token_hash, token.user_id, token.device_id, token.family_id,
            token.parent_hash, token.created_at, token.expires_at, token.spent_at,
            token.revoked_at,
        )  # fmt: skip

    async def find_refresh(self, token_hash: bytes) -> RefreshToken | None:
        row = await self._db.fetchrow(
            f"SELECT {_TOKEN_COLUMNS} FROM refresh_tokens WHERE token_hash = $1", token_hash
        )
        return _token(row) if row is not None else None

    async def rotate_refresh(
        self, token_hash: bytes, *, child_hash: bytes, expires_at: datetime, now: datetime
    ) -> RotateOutcome:
        async with self._db.transaction() as conn:
            # The conditional UPDATE is the whole race: of two concurrent
            # refreshes with one token, exactly one sees a row come back.
            row = await conn.fetchrow(
                f"UPDATE refresh_tokens SET spent_at = $2 WHERE token_hash = $1 AND {_LIVE} "
                f"RETURNING {_TOKEN_COLUMNS}",
                token_hash, now,
            )  # fmt: skip
            if row is not None:
                old = _token(row)
                child = RefreshToken(
                    token_hash=child_hash,
                    user_id=old.user_id,
                    device_id=old.device_id,
                    family_id=old.family_id,
                    parent_hash=token_hash,
                    created_at=now,
                    expires_at=expires_at,
                )
                await self._insert_token(conn, child)
                await conn.execute(
                    "UPDATE devices SET last_seen_at = $3 WHERE user_id = $1 AND device_id = $2",
                    old.user_id, old.device_id, now,
                )  # fmt: skip
                return RotateOutcome("rotated", child)
            row = await conn.fetchrow(
                f"SELECT {_TOKEN_COLUMNS} FROM refresh_tokens WHERE token_hash = $1", token_hash
            )
            if row is None:
                return RotateOutcome("invalid")
            presented = _token(row)
            if presented.revoked_at is not None or presented.expires_at <= now:
                return RotateOutcome("invalid")
            assert presented.spent_at is not None
            await conn.execute(
                "UPDATE refresh_tokens SET revoked_at = $2 "
                "WHERE family_id = $1 AND revoked_at IS NULL",
                presented.family_id, now,
            )  # fmt: skip
            return RotateOutcome("reused", presented)

    async def _revoke(self, where: str, *args: object) -> int:
        status = await self._db.execute(
            f"UPDATE refresh_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND {where}",
            *args,
        )
        return int(status.split()[-1])

    async def revoke_family(self, family_id: uuid.UUID, now: datetime) -> int:
        return await self._revoke("family_id = $2", now, family_id)

    async def revoke_device(self, user_id: uuid.UUID, device_id: str, now: datetime) -> int:
        return await self._revoke("user_id = $2 AND device_id = $3", now, user_id, device_id)

    async def revoke_user(self, user_id: uuid.UUID, now: datetime) -> int:
        return await self._revoke("user_id = $2", now, user_id)

    async def count_live_devices(self, user_id: uuid.UUID, now: datetime) -> int:
        count = await self._db.fetchval(
            f"SELECT count(DISTINCT device_id) FROM refresh_tokens WHERE user_id = $1 AND {_LIVE}",
            user_id, now,
        )  # fmt: skip
        return int(count)
