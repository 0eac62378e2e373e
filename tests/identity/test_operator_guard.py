"""Admin routes ask the store, not only the token, whether the caller is still an operator.

An access token lives 900 s. A suspended operator (say, a compromised
account) must lose admin powers at once, or they could reactivate themselves
with the token they hold.
"""

from __future__ import annotations

import uuid

import httpx

from penpay.http import Services, create_app
from tests.http.server import serving
from tests.identity.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_admin
from tests.identity.helpers import bearer, login


async def test_a_suspended_operator_cannot_use_the_token_they_hold(services: Services) -> None:
    assert services.auth is not None
    admin_id = await make_admin(services)
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        token = (await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)).json()["access_token"]
        assert (await client.get("/api/v1/admin/audit", headers=bearer(token))).status_code == 200
        await services.auth.set_status(uuid.UUID(admin_id), "suspended", actor="user:other")
        again = await client.put(f"/api/v1/admin/users/{admin_id}/status",
                                 json={"status": "active"}, headers=bearer(token))
        audit = await client.get("/api/v1/admin/audit", headers=bearer(token))
    assert (again.status_code, again.json()["code"]) == (403, "forbidden")
    assert audit.status_code == 403
    user = await services.auth.users.get_user(uuid.UUID(admin_id))
    assert user is not None and user.status == "suspended"

