"""Phone normalisation, PII encryption and blind index, Argon2id parameters, operators."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penpay.engine.clock import Clock
from penpay.http.auth.passwords import OWASP_MEMORY_KIB, Passwords
from penpay.http.auth.phone import InvalidPhoneNumber, mask_msisdn, normalize_kenyan_msisdn
from penpay.http.auth.pii import DecryptionFailed, PiiCipher, load_pii_cipher
from penpay.http.auth.service import create_admin
from penpay.http.auth.testing import memory_auth

digits8 = st.text(alphabet="0123456789", min_size=8, max_size=8)


@given(prefix=st.sampled_from(["7", "1"]), rest=digits8,
       spelling=st.sampled_from(["0{}", "254{}", "+254{}"]))  # fmt: skip
def test_every_accepted_spelling_normalises_to_e164(prefix: str, rest: str, spelling: str) -> None:
    assert normalize_kenyan_msisdn(spelling.format(prefix + rest)) == f"+254{prefix}{rest}"


@pytest.mark.parametrize(
    "bad",
    ["", "0812345678", "071234567", "07123456789", "+255712345678", "712345678", "07a2345678"],
)
def test_other_numbers_are_refused(bad: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        normalize_kenyan_msisdn(bad)


def test_mask() -> None:
    assert mask_msisdn("+254712345678") == "+2547****5678"


def test_pii_ciphertext_is_bound_to_its_row_and_keys_rotate(tmp_path: Path) -> None:
    cipher = PiiCipher({1: b"k" * 32}, b"b" * 32)
    blob = cipher.encrypt("+254712345678", purpose="users.phone", row_id="u1", nonce=b"n" * 12)
    assert cipher.decrypt(blob, key_version=1, purpose="users.phone", row_id="u1") == (
        "+254712345678"
    )
    with pytest.raises(DecryptionFailed):  # moved to another row
        cipher.decrypt(blob, key_version=1, purpose="users.phone", row_id="u2")
    with pytest.raises(DecryptionFailed):  # moved to another column
        cipher.decrypt(blob, key_version=1, purpose="users.deriv_token", row_id="u1")
    rotated = PiiCipher({1: b"k" * 32, 2: b"j" * 32}, b"b" * 32)
    assert rotated.current_version == 2
    assert rotated.decrypt(blob, key_version=1, purpose="users.phone", row_id="u1")
    index = cipher.blind_index("+254712345678", purpose="users.phone")
    assert len(index) == 16
    assert index == rotated.blind_index("+254712345678", purpose="users.phone")
    assert index != cipher.blind_index("+254712345679", purpose="users.phone")
    assert index != cipher.blind_index("+254712345678", purpose="users.email")
    # Development keys are generated once and reused.
    first = load_pii_cipher(tmp_path, environ={})
    second = load_pii_cipher(tmp_path, environ={})
    sealed = first.encrypt("x", purpose="p", row_id="r", nonce=b"\0" * 12)
    assert second.decrypt(sealed, key_version=1, purpose="p", row_id="r") == "x"
    assert (tmp_path / "keys" / "pii-blind-index.key").stat().st_mode & 0o777 == 0o600


async def test_owasp_argon2id_and_rehash() -> None:
    passwords = Passwords()
    hashed = await passwords.hash("correct horse battery")
    assert hashed.startswith(f"$argon2id$v=19$m={OWASP_MEMORY_KIB},t=2,p=1$")
    assert await passwords.verify(hashed, "correct horse battery")
    assert not await passwords.verify(hashed, "wrong")
    assert not await passwords.verify("not a hash", "wrong")
    assert not passwords.needs_rehash(hashed)
    weaker = "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$" + "A" * 43
    assert passwords.needs_rehash(weaker)
    await passwords.verify_dummy("anything")


async def test_login_rehashes_an_old_hash() -> None:
    auth = memory_auth(Clock())
    user = await auth.register(email="a@example.com", phone_e164="+254712345678",
                               password="correct horse battery")  # fmt: skip
    auth.passwords = Passwords()  # the deployment moved to stronger parameters
    await auth.login(email="a@example.com", password="correct horse battery", device_id=None)
    updated = await auth.users.get_user(user.id)
    assert updated is not None and f"m={OWASP_MEMORY_KIB}" in updated.password_hash


async def test_create_admin_makes_an_active_operator() -> None:
    auth = memory_auth(Clock())
    user_id = await create_admin(auth, "Ops@Example.com", "operator-password-1")
    pair = await auth.login(email="ops@example.com", password="operator-password-1",
                            device_id="console")  # fmt: skip
    claims = auth.tokens.verify(pair.access_token)
    assert (claims.sub, claims.role) == (user_id, "admin")
    user = await auth.users.find_by_email("ops@example.com")
    assert user is not None and user.status == "active" and user.phone_ciphertext is None
    with pytest.raises(ValueError, match="at least 12"):
        await create_admin(auth, "ops2@example.com", "short")
