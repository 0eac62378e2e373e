"""Access-token verification: the RFC 8725 attacks are refused (reliability.md §3.2)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from penpay.engine.clock import Clock, Entropy
from penpay.http.auth import tokens
from penpay.http.auth.tokens import (
    InvalidToken,
    KeySet,
    TokenAuthority,
    generate_signing_key,
    load_keyset,
)


@pytest.fixture
def clock() -> Clock:
    return Clock(wall_anchor=datetime(2026, 3, 1, tzinfo=UTC))


@pytest.fixture
def authority(keyset: KeySet, clock: Clock) -> TokenAuthority:
    return TokenAuthority(keyset, clock=clock, entropy=Entropy(7))


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_roundtrip(authority: TokenAuthority) -> None:
    claims = authority.verify(authority.issue(subject="u1", role="admin"))
    assert (claims.sub, claims.role) == ("u1", "admin")
    assert claims.exp - claims.iat == 900


async def test_expired_by_the_injected_clock(authority: TokenAuthority, clock: Clock) -> None:
    token = authority.issue(subject="u1", role="user")
    clock.skew(900 + authority.leeway_s - 1)
    authority.verify(token)  # still inside the leeway
    clock.skew(2)
    with pytest.raises(InvalidToken, match="expired"):
        authority.verify(token)


async def test_remembered_verifications_are_bounded(
    authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "VERIFIED_CACHE_SIZE", 2)
    issued = [authority.issue(subject=f"u{n}", role="user") for n in range(3)]
    for token in issued:
        authority.verify(token)
    assert list(authority._checked) == issued[1:]  # the oldest was forgotten
    assert authority.verify(issued[0]).sub == "u0"  # and is simply checked again


async def test_not_yet_valid(authority: TokenAuthority, clock: Clock) -> None:
    clock.skew(3600)
    token = authority.issue(subject="u1", role="user")
    clock.skew(-3600)
    with pytest.raises(InvalidToken, match="not yet valid"):
        authority.verify(token)


async def test_hs256_signed_with_the_public_key_is_refused(
    authority: TokenAuthority, keyset: KeySet
) -> None:
    genuine = authority.issue(subject="u1", role="user")
    claims = jwt.decode(genuine, options={"verify_signature": False})
    claims["role"] = "admin"
    public_pem = keyset.signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": keyset.signing_kid}
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        authority.verify(forged)


async def test_alg_none_is_refused(authority: TokenAuthority, keyset: KeySet) -> None:
    claims = jwt.decode(
        authority.issue(subject="u1", role="user"), options={"verify_signature": False}
    )
    for alg in ("none", "None", "RS256"):
        header = {"alg": alg, "typ": "at+jwt", "kid": keyset.signing_kid}
        with pytest.raises(InvalidToken):
            authority.verify(f"{_b64(header)}.{_b64(claims)}.")


async def test_tampered_payload_is_refused(authority: TokenAuthority) -> None:
    header, payload, signature = authority.issue(subject="u1", role="user").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "admin"
    with pytest.raises(InvalidToken):
        authority.verify(f"{header}.{_b64(claims)}.{signature}")


async def test_unknown_kid_and_foreign_key_are_refused(
    authority: TokenAuthority, clock: Clock
) -> None:
    stranger = TokenAuthority(KeySet(generate_signing_key()), clock=clock, entropy=Entropy(1))
    with pytest.raises(InvalidToken, match="unknown signing key"):
        authority.verify(stranger.issue(subject="u1", role="admin"))
    # A stranger's signature under our kid fails the signature check.
    forged = jwt.encode(
        {"sub": "u1"}, stranger.keyset.signing_key, algorithm="RS256",
        headers={"kid": authority.keyset.signing_kid, "typ": "at+jwt"},
    )  # fmt: skip
    with pytest.raises(InvalidToken):
        authority.verify(forged)


async def test_wrong_typ_audience_and_missing_claims(
    authority: TokenAuthority, keyset: KeySet, clock: Clock
) -> None:
    now = int(clock.now().timestamp())
    base = {"iss": authority.issuer, "aud": authority.audience, "sub": "u1", "iat": now,
            "nbf": now, "exp": now + 60, "jti": "j", "role": "user"}  # fmt: skip
    headers = {"kid": keyset.signing_kid, "typ": "at+jwt"}

    def sign(claims: dict[str, object], hdrs: dict[str, str] = headers) -> str:
        return jwt.encode(claims, keyset.signing_key, algorithm="RS256", headers=hdrs)

    authority.verify(sign(base))
    with pytest.raises(InvalidToken, match="not an access token"):
        authority.verify(sign(base, {"kid": keyset.signing_kid, "typ": "JWT"}))
    with pytest.raises(InvalidToken):
        authority.verify(sign({**base, "aud": "someone-else"}))
    with pytest.raises(InvalidToken):
        authority.verify(sign({**base, "aud": [authority.audience, "x"]}))
    with pytest.raises(InvalidToken):
        authority.verify(sign({**base, "iss": authority.issuer + ".evil"}))
    without_jti = {k: v for k, v in base.items() if k != "jti"}
    with pytest.raises(InvalidToken):
        authority.verify(sign(without_jti))
    with pytest.raises(InvalidToken):
        authority.verify("not.a.token")


async def test_keys_are_generated_once_and_reused(tmp_path: Path) -> None:
    first = load_keyset(tmp_path, environ={})
    second = load_keyset(tmp_path, environ={})
    assert first.signing_kid == second.signing_kid
    assert (tmp_path / "keys" / "jwt-signing.pem").stat().st_mode & 0o777 == 0o600
    pem = generate_signing_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    from_env = load_keyset(tmp_path, environ={"PENPAY_JWT_PRIVATE_KEY": pem.decode()})
    assert from_env.signing_kid != first.signing_kid
    # Rotation: the old public key stays accepted while the new one signs.
    old_public = first.signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rotating = load_keyset(
        tmp_path,
        environ={
            "PENPAY_JWT_PRIVATE_KEY": pem.decode(),
            "PENPAY_JWT_VERIFY_KEYS": old_public.decode(),
        },
    )
    assert set(rotating.public_keys) == {from_env.signing_kid, first.signing_kid}
    assert len(rotating.jwks()["keys"]) == 2
