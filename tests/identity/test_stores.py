"""Contract suites for the identity, idempotency and audit stores (memory and PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from penpay.storage.audit import AuditPayloadError, MemoryAuditLog
from penpay.storage.idempotency_keys import IdempotencyRequest, StoredResponse
from penpay.storage.identity import (
    EmailTaken,
    RefreshToken,
    User,
    UserNotFound,
    normalize_email,
)
from penpay.storage.pg import QueryFailed
from tests.identity.conftest import Stores

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _user(email: str = "a@example.com", n: int = 1) -> User:
    return User(
        id=uuid.UUID(int=n),
        email=email,
        phone_ciphertext=b"cipher" + bytes([n]),
        phone_key_version=1,
        phone_blind_index=b"bi" * 8,
        password_hash="$argon2id$fake",
        created_at=T0,
        updated_at=T0,
    )


def _token(user: User, device: str, n: int, family: int | None = None) -> RefreshToken:
    return RefreshToken(
        token_hash=bytes([n]) * 32,
        user_id=user.id,
        device_id=device,
        family_id=uuid.UUID(int=family or n),
        parent_hash=None,
        created_at=T0,
        expires_at=T0 + timedelta(days=30),
    )


async def test_users_roundtrip_and_email_uniqueness(stores: Stores) -> None:
    users = stores.users
    user = _user()
    await users.create_user(user)
    assert await users.get_user(user.id) == user
    assert await users.find_by_email("A@Example.com") == user
    assert await users.find_by_email("b@example.com") is None
    assert await users.find_by_phone_index(b"bi" * 8) == [user]
    with pytest.raises(EmailTaken):
        await users.create_user(_user("a@example.com", n=2))
    later = T0 + timedelta(hours=1)
    active = await users.set_status(user.id, "active", later)
    assert (active.status, active.updated_at) == ("active", later)
    linked = await users.set_deriv_link(
        user.id, login_id="CR123", currency="USD", full_name="W K",
        token_ciphertext=b"enc", token_key_version=1, now=later,
    )  # fmt: skip
    assert (linked.deriv_login_id, linked.deriv_token_ciphertext) == ("CR123", b"enc")
    await users.set_password_hash(user.id, "$argon2id$new", later)
    reread = await users.get_user(user.id)
    assert reread is not None and reread.password_hash == "$argon2id$new"
    with pytest.raises(UserNotFound):
        await users.set_status(uuid.UUID(int=99), "active", later)


#: Where Python's str.lower and PostgreSQL's lower() disagree: final sigma, dotted capital I.
UNICODE_EMAILS = ["ΟΔΟΣ@example.com", "İLKER@example.com"]


@pytest.mark.parametrize("email", UNICODE_EMAILS)
async def test_email_is_stored_and_found_in_one_normal_form(stores: Stores, email: str) -> None:
    users = stores.users
    await users.create_user(_user(email))
    found = await users.find_by_email(email)
    assert found is not None and found.email == normalize_email(email)
    assert await users.find_by_email(normalize_email(email)) == found
    assert await users.get_user(found.id) == found
    with pytest.raises(EmailTaken):
        await users.create_user(_user(normalize_email(email), n=2))


@pytest.mark.parametrize("email", UNICODE_EMAILS)
async def test_normalised_email_is_found_by_what_the_user_types(stores: Stores, email: str) -> None:
    user = _user(normalize_email(email))  # what AuthService.register stores
    await stores.users.create_user(user)
    assert await stores.users.find_by_email(email) == user


async def test_sessions_device_limit_rotation_and_reuse(stores: Stores) -> None:
    users = stores.users
    user = _user()
    await users.create_user(user)
    assert await users.start_session(_token(user, "phone", 1), devices_max=2, now=T0)
    assert await users.start_session(_token(user, "laptop", 2), devices_max=2, now=T0)
    assert not await users.start_session(_token(user, "tablet", 3), devices_max=2, now=T0)
    assert await users.find_refresh(bytes([3]) * 32) is None
    assert await users.count_live_devices(user.id, T0) == 2
    # A new login on a known device replaces that device's session.
    assert await users.start_session(_token(user, "phone", 4), devices_max=2, now=T0)
    old_phone = await users.find_refresh(bytes([1]) * 32)
    assert old_phone is not None and old_phone.revoked_at is not None

    rotated = await users.rotate_refresh(bytes([4]) * 32, child_hash=b"c" * 32,
                                         expires_at=T0 + timedelta(days=30), now=T0)  # fmt: skip
    assert rotated.kind == "rotated" and rotated.token is not None
    assert (rotated.token.family_id, rotated.token.parent_hash) == (uuid.UUID(int=4), b"\4" * 32)
    reused = await users.rotate_refresh(bytes([4]) * 32, child_hash=b"d" * 32,
                                        expires_at=T0 + timedelta(days=30), now=T0)  # fmt: skip
    assert reused.kind == "reused"
    child = await users.find_refresh(b"c" * 32)
    assert child is not None and child.revoked_at is not None  # the family is revoked
    assert await users.find_refresh(b"d" * 32) is None
    unknown = await users.rotate_refresh(b"u" * 32, child_hash=b"e" * 32,
                                         expires_at=T0, now=T0)  # fmt: skip
    assert unknown.kind == "invalid"
    # Expired tokens are invalid, not "reused".
    late = T0 + timedelta(days=31)
    expired = await users.rotate_refresh(bytes([2]) * 32, child_hash=b"f" * 32,
                                         expires_at=late, now=late)  # fmt: skip
    assert expired.kind == "invalid"
    assert await users.count_live_devices(user.id, late) == 0
    assert await users.revoke_user(user.id, T0) >= 1


async def test_idempotency_store_lease_takeover_and_reaping(stores: Stores) -> None:
    store = stores.idempotency
    principal = uuid.uuid4()
    request = IdempotencyRequest(
        principal_id=principal, key="key-00001", method="POST", route="/x", fingerprint=b"f" * 32
    )
    assert (await store.claim(request, now=T0, lease_s=90)).kind == "claimed"
    assert (await store.claim(request, now=T0 + timedelta(seconds=89), lease_s=90)).kind == (
        "in_progress"
    )
    other = IdempotencyRequest(
        principal_id=principal, key="key-00001", method="POST", route="/x", fingerprint=b"g" * 32
    )
    assert (await store.claim(other, now=T0, lease_s=90)).kind == "mismatch"
    # The first holder died: after its lease, the next copy takes over.
    late = T0 + timedelta(seconds=91)
    second = await store.claim(request, now=late, lease_s=90)
    assert second.kind == "claimed"
    await store.release(principal, "key-00001", second.lease)
    third = await store.claim(request, now=late, lease_s=90)
    assert third.kind == "claimed"
    response = StoredResponse(status=202, body=b'{"ok":true}', headers={"location": "/x/1"})
    await store.complete(principal, "key-00001", response, now=late, lease=third.lease)
    replay = await store.claim(request, now=late + timedelta(hours=24), lease_s=90)
    assert replay.kind == "replay" and replay.response == response
    await store.release(principal, "key-00001", third.lease)  # no effect on a finished key
    assert (await store.claim(request, now=late, lease_s=90)).kind == "replay"
    retention = timedelta(hours=72)
    assert await store.reap(finished_before=late + timedelta(hours=71) - retention) == 0
    assert await store.reap(finished_before=late + timedelta(hours=73) - retention) == 1
    assert (await store.claim(request, now=late, lease_s=90)).kind == "claimed"


async def test_audit_chain_appends_pages_and_verifies(stores: Stores) -> None:
    log = stores.audit
    for n in range(5):
        await log.append("user:1", "thing.done", f"thing:{n}", {"n": n, "nested": {"ok": True}})
    entries = await log.page(after_seq=0, limit=3)
    assert [e.subject for e in entries] == ["thing:0", "thing:1", "thing:2"]
    assert entries[0].prev_hash == bytes(32)
    assert entries[1].prev_hash == entries[0].hash
    rest = await log.page(after_seq=entries[-1].seq, limit=10)
    assert [e.payload["n"] for e in rest] == [3, 4]
    report = await log.verify()
    assert report.ok and report.entries_checked == 5 and report.first_bad_seq is None
    with pytest.raises(AuditPayloadError):
        await log.append("user:1", "oops", "x", {"phone_number": "+254712345678"})


async def test_a_copy_that_outlived_its_lease_cannot_touch_the_new_holders_claim(
    stores: Stores,
) -> None:
    """Copy A ran past its lease and copy B took the key over. A's release must not
    free B's claim (a third copy would run beside B), nor its late response replace
    B's."""
    store = stores.idempotency
    principal = uuid.uuid4()
    request = IdempotencyRequest(
        principal_id=principal, key="key-00002", method="POST", route="/x", fingerprint=b"f" * 32
    )
    a = await store.claim(request, now=T0, lease_s=90)
    later = T0 + timedelta(seconds=91)
    b = await store.claim(request, now=later, lease_s=90)
    assert (a.kind, b.kind) == ("claimed", "claimed") and a.lease != b.lease
    await store.release(principal, "key-00002", a.lease)  # A failed, late
    third = await store.claim(request, now=later + timedelta(seconds=1), lease_s=90)
    assert third.kind == "in_progress"
    a_says = StoredResponse(status=202, body=b'{"id":"A"}', headers={})
    b_says = StoredResponse(status=202, body=b'{"id":"B"}', headers={})
    await store.complete(principal, "key-00002", a_says, now=later, lease=a.lease)
    assert (await store.claim(request, now=later, lease_s=90)).kind == "in_progress"
    await store.complete(principal, "key-00002", b_says, now=later, lease=b.lease)
    await store.complete(principal, "key-00002", a_says, now=later, lease=a.lease)
    replay = await store.claim(request, now=later + timedelta(seconds=2), lease_s=90)
    assert replay.kind == "replay" and replay.response == b_says


@pytest.mark.parametrize(
    ("subject", "payload"),
    [
        ("x", {"note": "nul \x00 inside"}),
        ("x", {"note": "lone \ud800 surrogate"}),
        ("x", {"rate": 1e16}),
        ("x", {"nested": {"values": [1, -0.0]}}),
        ("nul\x00subject", {"n": 1}),
    ],
)
async def test_both_audit_stores_refuse_what_postgresql_cannot_keep_as_hashed(
    stores: Stores, subject: str, payload: dict[str, object]
) -> None:
    """PostgreSQL cannot store NUL or lone surrogates, and jsonb respells floats, so
    an entry would fail (after the action it records) or stop verifying."""
    with pytest.raises(AuditPayloadError):
        await stores.audit.append("user:1", "thing.done", subject, payload)
    await stores.audit.append("user:1", "thing.done", "x", {"note": "tab\tand\nline", "n": 10**16})
    assert (await stores.audit.verify()).ok


async def test_audit_tampering_is_detected(stores: Stores) -> None:
    log = stores.audit
    for n in range(4):
        await log.append("user:1", "thing.done", f"thing:{n}", {"n": n})
    third = (await log.page(after_seq=0, limit=10))[2]
    if isinstance(log, MemoryAuditLog):
        index = log.entries.index(third)
        log.entries[index] = msgspec.structs.replace(third, payload={"n": 99})
    else:
        db = stores.db
        assert db is not None
        with pytest.raises(QueryFailed, match="append-only"):
            await db.execute("UPDATE audit_log SET payload = '{\"n\": 99}' WHERE seq = $1",
                             third.seq)  # fmt: skip
        with pytest.raises(QueryFailed, match="append-only"):
            await db.execute("DELETE FROM audit_log WHERE seq = $1", third.seq)
        with pytest.raises(QueryFailed, match="append-only"):
            await db.execute("TRUNCATE audit_log")
        # A superuser can switch the trigger off; the chain still tells.
        async with db.transaction() as conn:
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
            await conn.execute(
                "UPDATE audit_log SET payload = '{\"n\": 99}' WHERE seq = $1", third.seq
            )
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    report = await log.verify()
    assert not report.ok
    assert report.first_bad_seq == third.seq
    assert report.entries_checked == 2
    assert report.reason == "hash does not match the entry's content"


async def test_audit_deleted_row_breaks_the_next_link(stores: Stores) -> None:
    log = stores.audit
    for n in range(3):
        await log.append("system", "thing.done", f"thing:{n}", {"n": n})
    entries = await log.page()
    if isinstance(log, MemoryAuditLog):
        log.entries.remove(entries[1])
    else:
        assert stores.db is not None
        async with stores.db.transaction() as conn:
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
            await conn.execute("DELETE FROM audit_log WHERE seq = $1", entries[1].seq)
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    report = await log.verify()
    assert report.first_bad_seq == entries[2].seq
    assert report.reason == "prev_hash does not match the previous entry's hash"
