"""RS256 access tokens: signing, verification and the published key set.

Access tokens are JWTs with header ``{"alg": "RS256", "typ": "at+jwt",
"kid": …}`` and claims ``iss, aud, sub, iat, nbf, exp, jti, role``; they live
900 s. Verification follows reliability.md §3.2 / RFC 8725:

* the header is read unverified **only** to pick a key by ``kid`` from the
  local key set; an unknown ``kid``, a ``typ`` other than ``at+jwt`` or an
  ``alg`` other than RS256 is refused before any cryptography;
* ``jwt.decode`` gets the hard-coded ``algorithms=["RS256"]`` (so ``none``
  and HS256-signed-with-the-public-key fail), a ``require`` list, exact
  ``iss`` and ``strict_aud``, and ``enforce_minimum_key_length``;
* time claims are checked against PenPay's :class:`~penpay.engine.clock.Clock`
  (with ``leeway_s``), not the host clock, so tests and the simulation can
  move time; PyJWT's own time checks are switched off for that reason only.

Keys: the signing key comes from ``PENPAY_JWT_PRIVATE_KEY`` (PEM) or is
generated on first run into ``var/keys/jwt-signing.pem``. Retired public
keys can be kept verifiable during a rotation through
``PENPAY_JWT_VERIFY_KEYS`` (concatenated PEM public keys). ``kid`` is the
RFC 7638 thumbprint of the public key, so it never has to be configured.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from penpay.engine.clock import Clock, Entropy
from penpay.errors import ConfigurationError, PenPayError
from penpay.http.auth.keyfiles import keys_dir, load_or_create

ACCESS_TOKEN_TTL_S = 900
LEEWAY_S = 30
RSA_KEY_BITS = 2048
TOKEN_TYPE = "at+jwt"
ALGORITHM = "RS256"
DEFAULT_ISSUER = "https://penpay.local"
DEFAULT_AUDIENCE = "penpay-api"
PRIVATE_KEY_ENV = "PENPAY_JWT_PRIVATE_KEY"
VERIFY_KEYS_ENV = "PENPAY_JWT_VERIFY_KEYS"
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "role"]
_PEM_BLOCK = re.compile(
    rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL
)


class InvalidToken(PenPayError):
    """The access token is malformed, forged, expired or not for us; the message says which."""


class AccessClaims(msgspec.Struct, frozen=True, kw_only=True):
    """The verified claims PenPay uses."""

    sub: str
    role: str
    jti: str
    exp: int
    iat: int


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256), used as the ``kid``."""
    numbers = public_key.public_numbers()
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    canonical = json.dumps(
        {"e": _b64url(e), "kty": "RSA", "n": _b64url(n)}, separators=(",", ":"), sort_keys=True
    )
    return _b64url(hashlib.sha256(canonical.encode()).digest())


class KeySet:
    """One RSA signing key plus every public key still accepted, by ``kid``."""

    def __init__(
        self,
        signing_key: rsa.RSAPrivateKey,
        extra_public_keys: list[rsa.RSAPublicKey] | None = None,
    ) -> None:
        if signing_key.key_size < RSA_KEY_BITS:
            raise ConfigurationError(f"the JWT signing key must be at least {RSA_KEY_BITS} bits")
        self.signing_key = signing_key
        self.signing_kid = thumbprint(signing_key.public_key())
        self.public_keys: dict[str, rsa.RSAPublicKey] = {
            self.signing_kid: signing_key.public_key()
        }
        for key in extra_public_keys or []:
            self.public_keys[thumbprint(key)] = key

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JWK Set (RFC 7517), for ``/auth/jwks.json``."""
        keys = []
        for kid, key in self.public_keys.items():
            jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
            jwk.update({"kid": kid, "use": "sig", "alg": ALGORITHM})
            keys.append(jwk)
        return {"keys": keys}


def generate_signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)


def _private_key_from_pem(pem: bytes, source: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise ConfigurationError(f"{source}: not a PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"{source}: the JWT signing key must be RSA")
    return key


def _public_keys_from_pem(bundle: bytes) -> list[rsa.RSAPublicKey]:
    keys = []
    for block in _PEM_BLOCK.findall(bundle):
        key = serialization.load_pem_public_key(block)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigurationError(f"{VERIFY_KEYS_ENV}: only RSA public keys are accepted")
        keys.append(key)
    return keys


def load_keyset(data_dir: Path, environ: Mapping[str, str] | None = None) -> KeySet:
    """The key set from the environment, else from (or generated into) ``data_dir/keys/``."""
    env = os.environ if environ is None else environ
    if env.get(PRIVATE_KEY_ENV):
        signing = _private_key_from_pem(env[PRIVATE_KEY_ENV].encode(), PRIVATE_KEY_ENV)
    else:

        def create() -> bytes:
            return generate_signing_key().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )

        pem = load_or_create(keys_dir(data_dir) / "jwt-signing.pem", create)
        signing = _private_key_from_pem(pem, "var/keys/jwt-signing.pem")
    extra = _public_keys_from_pem(env.get(VERIFY_KEYS_ENV, "").encode())
    return KeySet(signing, extra)


#: Verified tokens remembered; about one per active session.
VERIFIED_CACHE_SIZE = 10_000


class TokenAuthority:
    """Issues and verifies access tokens with one :class:`KeySet`."""

    def __init__(
        self,
        keyset: KeySet,
        *,
        clock: Clock,
        entropy: Entropy,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        ttl_s: int = ACCESS_TOKEN_TTL_S,
        leeway_s: int = LEEWAY_S,
    ) -> None:
        self.keyset = keyset
        self._clock = clock
        self._entropy = entropy
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self.leeway_s = leeway_s
        #: Tokens whose signature and claims passed, oldest first (insertion order).
        self._checked: dict[str, tuple[AccessClaims, int]] = {}

    def issue(self, *, subject: str, role: str) -> str:
        now_s = int(self._clock.now().timestamp())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now_s,
            "nbf": now_s,
            "exp": now_s + self.ttl_s,
            "jti": self._entropy.token_urlsafe(16),
            "role": role,
        }
        return jwt.encode(
            claims,
            self.keyset.signing_key,
            algorithm=ALGORITHM,
            headers={"kid": self.keyset.signing_kid, "typ": TOKEN_TYPE},
        )

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token; raises :class:`InvalidToken` otherwise.

        A client sends the same token with every request for its 15 minutes,
        so the signature and claim checks (the costly part) are remembered per
        token; the time checks run against PenPay's clock on every call.
        """
        checked = self._checked.get(token)
        if checked is None:
            checked = self._check_signature_and_claims(token)
            if len(self._checked) >= VERIFIED_CACHE_SIZE:
                del self._checked[next(iter(self._checked))]  # the oldest entry
            self._checked[token] = checked
        verified, nbf = checked
        now_s = self._clock.now().timestamp()
        if now_s >= verified.exp + self.leeway_s:
            raise InvalidToken("expired")
        if now_s + self.leeway_s < nbf or now_s + self.leeway_s < verified.iat:
            raise InvalidToken("not yet valid")
        return verified

    def _check_signature_and_claims(self, token: str) -> tuple[AccessClaims, int]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        # The header only chooses the key; nothing in it is trusted beyond that.
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("algorithm not accepted")
        if header.get("typ") != TOKEN_TYPE:
            raise InvalidToken("not an access token")
        kid = header.get("kid")
        key = self.keyset.public_keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("unknown signing key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": _REQUIRED_CLAIMS,
                    "strict_aud": True,
                    "enforce_minimum_key_length": True,
                    # Checked below against PenPay's clock instead of the host's.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"rejected: {exc}") from None
        try:
            verified = msgspec.convert(claims, AccessClaims)
            nbf = int(claims["nbf"])
        except (msgspec.ValidationError, TypeError, ValueError):
            raise InvalidToken("claims have the wrong types") from None
        return verified, nbf
