"""Identity routes over a real socket: register, login, refresh, logout, /me, JWKS."""

from __future__ import annotations

import uuid

import httpx
import jwt
import pytest

from penpay.http import Services, create_app
from tests.http.server import serving
from tests.identity.conftest import Stores
from tests.identity.helpers import PASSWORD, bearer, login, register

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0712345678", "+254712345678"),
        ("254712345678", "+254712345678"),
        ("+254712345678", "+254712345678"),
        ("0712 345-678", "+254712345678"),
        ("0112345678", "+254112345678"),
        ("+254112345678", "+254112345678"),
    ],
)
async def test_register_normalises_phone(services: Services, raw: str, expected: str) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await register(client, phone=raw)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "pending"
        token = (await login(client)).json()["access_token"]
        me = (await client.get("/api/v1/me", headers=bearer(token))).json()
    assert me["phone_number"] == expected
    assert me["user_id"] == body["user_id"]
    assert me["email"] == "wanjiru@example.com"
    assert me["deriv"] == {"login_id": None, "linked": False, "currency": None, "full_name": None}
    assert me["limits"]["deposit"]["min_cents"] == 200


async def test_register_validation_names_every_bad_field(services: Services) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await register(client, email="not-an-email", phone="0812345678",
                                  password="short")  # fmt: skip
        missing = await client.post("/api/v1/auth/register", json={"email": "a@b.co"})
        not_json = await client.post("/api/v1/auth/register", content=b"{nope")
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed"
    assert response.headers["content-type"] == "application/problem+json"
    assert {e["field"] for e in body["errors"]} == {"email", "phone_number", "password"}
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "phone_number"
    assert not_json.status_code == 400


async def test_duplicate_email_is_409_case_insensitively(services: Services) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await register(client)).status_code == 201
        again = await register(client, email="Wanjiru@Example.COM", phone="0722000000")
    assert again.status_code == 409
    assert again.json()["code"] == "email_taken"


async def test_phone_is_stored_encrypted(services: Services, stores: Stores) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        await register(client)
    user = await stores.users.find_by_email("wanjiru@example.com")
    assert user is not None and user.phone_ciphertext is not None
    assert b"712345678" not in user.phone_ciphertext
    assert services.auth is not None
    assert user.phone_blind_index == services.auth.phone_index("+254712345678")
    assert [u.id for u in await stores.users.find_by_phone_index(user.phone_blind_index)] == [
        user.id
    ]
    if stores.db is not None:
        raw = await stores.db.fetchval("SELECT users::text FROM users")
        assert "712345678" not in raw


async def test_login_ok_and_invalid(services: Services) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        await register(client)
        ok = await login(client)
        wrong = await login(client, password="wrong password!!")
        unknown = await login(client, email="nobody@example.com")
        jwks = (await client.get("/api/v1/auth/jwks.json")).json()
    assert ok.status_code == 200
    assert ok.headers["cache-control"] == "no-store"
    pair = ok.json()
    assert pair["token_type"] == "Bearer"
    assert pair["expires_in"] == 900
    assert pair["refresh_expires_in"] == 2592000
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["code"] == unknown.json()["code"] == "invalid_credentials"
    # The token verifies with the published key, by kid, as an outside party would.
    header = jwt.get_unverified_header(pair["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256"
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert "d" not in jwk  # public only
    claims = jwt.decode(
        pair["access_token"],
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience="penpay-api",
        options={"require": ["exp", "iat", "nbf", "jti", "sub", "iss", "aud"]},
    )
    assert claims["role"] == "user"
    assert set(claims) == {"iss", "aud", "sub", "iat", "nbf", "exp", "jti", "role"}


async def test_me_requires_a_token_and_sets_no_store(services: Services) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        await register(client)
        anonymous = await client.get("/api/v1/me")
        token = (await login(client)).json()["access_token"]
        me = await client.get("/api/v1/me", headers=bearer(token))
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthorized"
    assert me.status_code == 200
    assert me.headers["cache-control"] == "no-store"


async def test_refresh_rotates_and_reuse_revokes_the_family(services: Services) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        await register(client)
        first = (await login(client)).json()["refresh_token"]
        rotated = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
        assert rotated.status_code == 200
        second = rotated.json()["refresh_token"]
        assert second != first
        # The old token is spent: presenting it again is a theft signal.
        replayed = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
        assert replayed.status_code == 401
        assert replayed.json()["code"] == "invalid_token"
        # ... and the whole family is gone, including the legitimate child.
        child = await client.post("/api/v1/auth/refresh", json={"refresh_token": second})
        assert child.status_code == 401
        garbage = await client.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 43})
        assert garbage.status_code == 401
    assert services.audit is not None
    actions = [e.action for e in await services.audit.page(limit=100)]
    assert "auth.refresh_reuse_detected" in actions


async def test_third_device_is_refused_until_one_logs_out(services: Services) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        await register(client)
        phone = await login(client, device_id="phone")
        assert phone.status_code == 200
        assert (await login(client, device_id="laptop")).status_code == 200
        again_phone = await login(client, device_id="phone")  # same device: allowed
        assert again_phone.status_code == 200
        third = await login(client, device_id="tablet")
        assert third.status_code == 403
        assert third.json()["code"] == "device_limit_reached"
        out = await client.post(
            "/api/v1/auth/logout", json={"refresh_token": again_phone.json()["refresh_token"]}
        )
        assert out.status_code == 204
        assert (await login(client, device_id="tablet")).status_code == 200
        # The phone's first session was replaced by its second login.
        stale = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": phone.json()["refresh_token"]}
        )
        assert stale.status_code == 401


async def test_logout_all_devices(services: Services) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        await register(client)
        a = (await login(client, device_id="a")).json()["refresh_token"]
        b = (await login(client, device_id="b")).json()["refresh_token"]
        out = await client.post(
            "/api/v1/auth/logout", json={"refresh_token": a, "all_devices": True}
        )
        assert out.status_code == 204
        for token in (a, b):
            refused = await client.post("/api/v1/auth/refresh", json={"refresh_token": token})
            assert refused.status_code == 401
        # Logging out twice, or with an unknown token, is harmless.
        again = await client.post("/api/v1/auth/logout", json={"refresh_token": a})
        assert again.status_code == 204


async def test_suspended_user_cannot_log_in_or_refresh(services: Services) -> None:
    assert services.auth is not None
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        user_id = (await register(client)).json()["user_id"]
        refresh = (await login(client)).json()["refresh_token"]
        await services.auth.set_status(uuid.UUID(user_id), "suspended", actor="test")
        denied = await login(client, password=PASSWORD)
        refused = await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
    assert denied.status_code == 403
    assert denied.json()["code"] == "account_suspended"
    assert refused.status_code == 401


async def test_a_refresh_token_shown_from_another_device_ends_its_session(
    services: Services,
) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        await register(client)
        token = (await login(client, device_id="phone")).json()["refresh_token"]
        stolen = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": token, "device_id": "elsewhere"}
        )
        assert stolen.status_code == 401
        owner = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": token, "device_id": "phone"}
        )
        assert owner.status_code == 401  # the session it belonged to is over
    assert services.audit is not None
    actions = [e.action for e in await services.audit.page(limit=100)]
    assert "auth.refresh_wrong_device" in actions
