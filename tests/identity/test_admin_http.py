"""Operator routes: role checks, user status changes, the audit log over HTTP."""

from __future__ import annotations

import httpx
import pytest

from penpay.engine import ActorSystem
from penpay.http import Services, create_app
from penpay.http.auth.testing import bearer_headers, memory_auth
from tests.http.server import serving
from tests.identity.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_admin
from tests.identity.helpers import bearer, login, register, token_for

pytestmark = pytest.mark.integration

ADMIN_ROUTES = [
    ("GET", "/api/v1/admin/actors"),
    ("GET", "/api/v1/admin/actors/counter/c1"),
    ("GET", "/api/v1/admin/audit"),
    ("GET", "/api/v1/admin/audit/verify"),
    ("PUT", "/api/v1/admin/users/0190c0de-0000-7000-8000-000000000000/status"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_admin_routes_need_the_admin_role(
    services: Services, method: str, path: str
) -> None:
    await make_admin(services)
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        await register(client)
        user_token = await token_for(client, "wanjiru@example.com")
        admin_token = await token_for(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        body = {"status": "active"}
        anonymous = await client.request(method, path, json=body)
        as_user = await client.request(method, path, json=body, headers=bearer(user_token))
        as_admin = await client.request(method, path, json=body, headers=bearer(admin_token))
        garbage = await client.request(method, path, json=body, headers=bearer("abc.def.ghi"))
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthorized"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert garbage.status_code == 401
    assert as_user.status_code == 403
    assert as_user.json()["code"] == "forbidden"
    assert as_admin.status_code in (200, 404)  # 404: the actor / user does not exist
    if path.endswith(("/actors", "/audit", "/verify")):
        assert as_admin.status_code == 200


async def test_without_identity_configured_nothing_is_let_through(system: ActorSystem) -> None:
    app = create_app(Services(system=system))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        actors = await client.get("/api/v1/admin/actors")
        forged_free = await client.get(
            "/api/v1/admin/actors", headers=bearer_headers(memory_auth(), role="admin")
        )
        registration = await register(client)
    assert actors.status_code == forged_free.status_code == 401
    assert registration.status_code == 503


async def test_admin_activates_and_suspends_a_user(services: Services) -> None:
    await make_admin(services)
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        user_id = (await register(client)).json()["user_id"]
        user = await login(client)
        admin = bearer(await token_for(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        path = f"/api/v1/admin/users/{user_id}/status"
        activated = await client.put(path, json={"status": "active"}, headers=admin)
        assert activated.json() == {"user_id": user_id, "status": "active"}
        me = await client.get("/api/v1/me", headers=bearer(user.json()["access_token"]))
        assert me.json()["status"] == "active"
        bad = await client.put(path, json={"status": "deleted"}, headers=admin)
        assert bad.status_code == 422
        suspended = await client.put(path, json={"status": "suspended"}, headers=admin)
        assert suspended.status_code == 200
        refresh = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": user.json()["refresh_token"]}
        )
        assert refresh.status_code == 401  # suspension ended the session
        audit = (await client.get("/api/v1/admin/audit", headers=admin)).json()
        verify = (await client.get("/api/v1/admin/audit/verify", headers=admin)).json()
    changes = [e for e in audit["items"] if e["action"] == "user.status_changed"]
    assert [(e["payload"]["from"], e["payload"]["to"]) for e in changes][-2:] == [
        ("pending", "active"),
        ("active", "suspended"),
    ]
    assert changes[-1]["subject"] == f"user:{user_id}"
    assert changes[-1]["actor"].startswith("user:")
    assert verify["ok"] is True and verify["entries_checked"] == len(audit["items"])


async def test_audit_pages_with_a_cursor_and_holds_no_raw_pii(services: Services) -> None:
    await make_admin(services)
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        await register(client)
        await login(client, password="wrong password!!")
        await login(client, email="ghost@example.com")
        await login(client)
        admin = bearer(await token_for(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        first = (await client.get("/api/v1/admin/audit?limit=2", headers=admin)).json()
        second = (
            await client.get(f"/api/v1/admin/audit?cursor={first['next_cursor']}", headers=admin)
        ).json()
        bad_cursor = await client.get("/api/v1/admin/audit?cursor=abc", headers=admin)
    items = first["items"] + second["items"]
    assert [e["seq"] for e in items] == sorted(e["seq"] for e in items)
    assert len(first["items"]) == 2
    actions = [e["action"] for e in items]
    assert actions.count("auth.login_failed") == 2
    assert "user.registered" in actions and "auth.login_succeeded" in actions
    text = str(items)
    assert "wanjiru" not in text and "ghost" not in text and "712345678" not in text
    assert bad_cursor.status_code == 422
