"""Identity operations: register, login, refresh, logout, status changes, operators.

This is the part with the rules (device limit, rotation, reuse detection,
auditing); the routes in :mod:`penpay.http.auth.routes` only parse and
answer. Failures are :class:`AuthError` subclasses carrying the HTTP status
and stable code the routes return.

Refresh tokens are 32 random bytes from :class:`~penpay.engine.clock.Entropy`,
handed to the client once and stored only as ``sha256``. Every use spends the
token and issues its child in the same family; a spent token presented again
means a copy exists somewhere else, so the whole family is revoked and the
event is audited.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import msgspec

from penpay.engine.clock import Clock, Entropy
from penpay.errors import PenPayError
from penpay.http.auth.passwords import Passwords
from penpay.http.auth.pii import NONCE_BYTES, PiiCipher
from penpay.http.auth.tokens import TokenAuthority
from penpay.http.auth.validation import email_problem, password_problem
from penpay.storage.audit import AuditLog
from penpay.storage.identity import (
    RefreshToken,
    Role,
    User,
    UserNotFound,
    UserStatus,
    UserStore,
    normalize_email,
)

REFRESH_TOKEN_TTL_S = 30 * 24 * 3600
REFRESH_TOKEN_BYTES = 32
DEVICES_MAX = 2
#: The device a login without ``device_id`` is counted as.
DEFAULT_DEVICE_ID = "default"
PHONE_PURPOSE = "users.phone"
DERIV_TOKEN_PURPOSE = "users.deriv_token"
EMAIL_INDEX_PURPOSE = "users.email"


class AuthError(PenPayError):
    """A refused identity operation; ``status`` and ``code`` are what the client sees."""

    status = 400
    code = "bad_request"


class InvalidCredentials(AuthError):
    status, code = 401, "invalid_credentials"


class InvalidRefreshToken(AuthError):
    status, code = 401, "invalid_token"


class DeviceLimitReached(AuthError):
    status, code = 403, "device_limit_reached"


class AccountSuspended(AuthError):
    status, code = 403, "account_suspended"


class TokenPair(msgspec.Struct, frozen=True, kw_only=True):
    """The body of a successful login or refresh (API.md)."""

    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


def hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AuthService:
    """Everything identity does, over a :class:`UserStore` and an :class:`AuditLog`."""

    def __init__(
        self,
        *,
        users: UserStore,
        tokens: TokenAuthority,
        passwords: Passwords,
        pii: PiiCipher,
        audit: AuditLog,
        clock: Clock,
        entropy: Entropy,
        devices_max: int = DEVICES_MAX,
        refresh_ttl_s: int = REFRESH_TOKEN_TTL_S,
    ) -> None:
        self.users = users
        self.tokens = tokens
        self.passwords = passwords
        self.pii = pii
        self.audit = audit
        self.clock = clock
        self.entropy = entropy
        self.devices_max = devices_max
        self.refresh_ttl_s = refresh_ttl_s

    # ------------------------------------------------------------------ users

    def phone_index(self, e164: str) -> bytes:
        """The blind index of a normalised phone number (lookups, rate-limit keys)."""
        return self.pii.blind_index(e164, purpose=PHONE_PURPOSE)

    def email_index(self, email: str) -> str:
        """A short keyed digest of an e-mail for audit payloads (no raw PII there)."""
        return self.pii.blind_index(normalize_email(email), purpose=EMAIL_INDEX_PURPOSE).hex()

    def phone_of(self, user: User) -> str | None:
        """The user's phone number in clear (E.164); None for an operator without one."""
        if user.phone_ciphertext is None or user.phone_key_version is None:
            return None
        return self.pii.decrypt(
            user.phone_ciphertext,
            key_version=user.phone_key_version,
            purpose=PHONE_PURPOSE,
            row_id=str(user.id),
        )

    def deriv_token_of(self, user: User) -> str | None:
        """The user's Deriv API token in clear, for the Deriv gateway only."""
        if user.deriv_token_ciphertext is None or user.deriv_token_key_version is None:
            return None
        return self.pii.decrypt(
            user.deriv_token_ciphertext,
            key_version=user.deriv_token_key_version,
            purpose=DERIV_TOKEN_PURPOSE,
            row_id=str(user.id),
        )

    async def register(
        self, *, email: str, phone_e164: str | None, password: str, role: Role = "user"
    ) -> User:
        """Create a ``pending`` user; raises :class:`~penpay.storage.identity.EmailTaken`.

        Inputs are already validated (:mod:`penpay.http.auth.validation`, and
        the phone normalised); only operators may have no phone.
        """
        assert phone_e164 is not None or role == "admin", "customers need a phone number"
        now = self.clock.now()
        user_id = self.entropy.uuid7(self.clock.now_ms())
        ciphertext = None
        if phone_e164 is not None:
            ciphertext = self.pii.encrypt(
                phone_e164,
                purpose=PHONE_PURPOSE,
                row_id=str(user_id),
                nonce=self.entropy.token_bytes(NONCE_BYTES),
            )
        user = User(
            id=user_id,
            email=normalize_email(email),
            phone_ciphertext=ciphertext,
            phone_key_version=self.pii.current_version if ciphertext else None,
            phone_blind_index=self.phone_index(phone_e164) if phone_e164 else None,
            password_hash=await self.passwords.hash(password),
            role=role,
            created_at=now,
            updated_at=now,
        )
        await self.users.create_user(user)
        await self.audit.append(
            f"user:{user_id}", "user.registered", f"user:{user_id}", {"role": role}
        )
        return user

    async def set_status(self, user_id: uuid.UUID, status: UserStatus, *, actor: str) -> User:
        """Change a user's status; leaving ``active``/``pending`` ends every session."""
        before = await self.users.get_user(user_id)
        if before is None:
            raise UserNotFound(str(user_id))
        now = self.clock.now()
        user = await self.users.set_status(user_id, status, now)
        revoked = 0
        if status in ("suspended", "closed"):
            revoked = await self.users.revoke_user(user_id, now)
        await self.audit.append(
            actor,
            "user.status_changed",
            f"user:{user_id}",
            {"from": before.status, "to": status, "sessions_revoked": revoked},
        )
        return user

    async def link_deriv(
        self, user_id: uuid.UUID, *, login_id: str, currency: str, full_name: str, token: str
    ) -> User:
        """Store a confirmed Deriv link; the Deriv token is encrypted to the user's row."""
        ciphertext = self.pii.encrypt(
            token,
            purpose=DERIV_TOKEN_PURPOSE,
            row_id=str(user_id),
            nonce=self.entropy.token_bytes(NONCE_BYTES),
        )
        user = await self.users.set_deriv_link(
            user_id,
            login_id=login_id,
            currency=currency,
            full_name=full_name,
            token_ciphertext=ciphertext,
            token_key_version=self.pii.current_version,
            now=self.clock.now(),
        )
        await self.audit.append(
            f"user:{user_id}", "user.deriv_linked", f"user:{user_id}", {"login_id": login_id}
        )
        return user

    # --------------------------------------------------------------- sessions

    def _new_refresh_token(self) -> str:
        return self.entropy.token_urlsafe(REFRESH_TOKEN_BYTES)

    def _pair(self, user_id: uuid.UUID, role: str, refresh: str) -> TokenPair:
        return TokenPair(
            access_token=self.tokens.issue(subject=str(user_id), role=role),
            expires_in=self.tokens.ttl_s,
            refresh_token=refresh,
            refresh_expires_in=self.refresh_ttl_s,
        )

    async def login(self, *, email: str, password: str, device_id: str | None) -> TokenPair:
        """Check the password and open a session on ``device_id``.

        Unknown e-mails cost one dummy Argon2 verification, like a wrong
        password, and answer the same :class:`InvalidCredentials`.
        """
        device = device_id or DEFAULT_DEVICE_ID
        user = await self.users.find_by_email(email)
        if user is None:
            await self.passwords.verify_dummy(password)
            await self._login_failed(None, email, "unknown_email")
            raise InvalidCredentials("e-mail or password is wrong")
        if not await self.passwords.verify(user.password_hash, password):
            await self._login_failed(user, email, "wrong_password")
            raise InvalidCredentials("e-mail or password is wrong")
        if user.status == "closed":
            await self._login_failed(user, email, "account_closed")
            raise InvalidCredentials("e-mail or password is wrong")
        if user.status == "suspended":
            await self._login_failed(user, email, "account_suspended")
            raise AccountSuspended("this account is suspended; contact support")
        now = self.clock.now()
        if self.passwords.needs_rehash(user.password_hash):
            await self.users.set_password_hash(user.id, await self.passwords.hash(password), now)
        refresh = self._new_refresh_token()
        token = RefreshToken(
            token_hash=hash_refresh_token(refresh),
            user_id=user.id,
            device_id=device,
            family_id=self.entropy.uuid7(self.clock.now_ms()),
            parent_hash=None,
            created_at=now,
            expires_at=now + timedelta(seconds=self.refresh_ttl_s),
        )
        if not await self.users.start_session(token, devices_max=self.devices_max, now=now):
            await self._login_failed(user, email, "device_limit_reached")
            raise DeviceLimitReached(
                f"already signed in on {self.devices_max} devices; log out of one first"
            )
        await self.audit.append(
            f"user:{user.id}",
            "auth.login_succeeded",
            f"user:{user.id}",
            {"device_id": device, "family_id": str(token.family_id)},
        )
        return self._pair(user.id, user.role, refresh)

    async def _login_failed(self, user: User | None, email: str, reason: str) -> None:
        subject = f"user:{user.id}" if user else f"email:{self.email_index(email)}"
        await self.audit.append("anonymous", "auth.login_failed", subject, {"reason": reason})

    async def refresh(self, refresh_token: str, *, device_id: str | None) -> TokenPair:
        """Spend ``refresh_token`` and return a new pair; reuse revokes the family."""
        now = self.clock.now()
        token_hash = hash_refresh_token(refresh_token)
        presented = await self.users.find_refresh(token_hash)
        if presented is None:
            raise InvalidRefreshToken("refresh token is not valid")
        if device_id is not None and device_id != presented.device_id:
            # A refresh token is bound to its device: shown from another, it has
            # leaked. As with reuse, the whole session ends, spent token or not.
            await self.users.revoke_family(presented.family_id, now)
            await self._audit_leak("auth.refresh_wrong_device", presented)
            raise InvalidRefreshToken("refresh token is not valid; the session is revoked")
        user = await self.users.get_user(presented.user_id)
        if user is None or user.status in ("suspended", "closed"):
            raise InvalidRefreshToken("refresh token is not valid")
        child = self._new_refresh_token()
        outcome = await self.users.rotate_refresh(
            token_hash,
            child_hash=hash_refresh_token(child),
            expires_at=now + timedelta(seconds=self.refresh_ttl_s),
            now=now,
        )
        if outcome.kind == "reused":  # the store has revoked the family
            await self._audit_leak("auth.refresh_reuse_detected", presented)
            raise InvalidRefreshToken("refresh token was already used; the session is revoked")
        if outcome.kind != "rotated":
            raise InvalidRefreshToken("refresh token is not valid")
        return self._pair(user.id, user.role, child)

    async def _audit_leak(self, action: str, token: RefreshToken) -> None:
        """Record a refresh token seen where it should not be (its family is revoked)."""
        await self.audit.append(
            "anonymous", action, f"user:{token.user_id}",
            {"family_id": str(token.family_id), "device_id": token.device_id},
        )

    async def logout(self, refresh_token: str, *, all_devices: bool) -> None:
        """End the token's device session, or every session of its user. Unknown tokens are
        ignored: logout must not reveal which tokens exist and is safe to repeat."""
        token = await self.users.find_refresh(hash_refresh_token(refresh_token))
        if token is None:
            return
        now = self.clock.now()
        if all_devices:
            revoked = await self.users.revoke_user(token.user_id, now)
        else:
            revoked = await self.users.revoke_device(token.user_id, token.device_id, now)
        await self.audit.append(
            f"user:{token.user_id}",
            "auth.logout",
            f"user:{token.user_id}",
            {"all_devices": all_devices, "device_id": token.device_id, "revoked": revoked},
        )


async def create_admin(
    service: AuthService, email: str, password: str, *, phone_e164: str | None = None
) -> str:
    """Create an active operator (``run.py admin create``); returns the new user id.

    Raises ``ValueError`` for an unacceptable e-mail or password and
    :class:`~penpay.storage.identity.EmailTaken` if the e-mail is in use.
    Registration and activation are both audited.
    """
    for problem in (email_problem(email), password_problem(password)):
        if problem is not None:
            raise ValueError(problem)
    user = await service.register(
        email=email, phone_e164=phone_e164, password=password, role="admin"
    )
    await service.set_status(user.id, "active", actor="system")
    return str(user.id)
