"""An unexpected failure is a problem+json 500 that still carries every security header."""

from __future__ import annotations

import httpx

from penpay.http import Services, create_app
from tests.http.server import serving
from tests.identity.helpers import bearer, login, register


async def test_a_500_carries_the_security_headers_and_no_detail(services: Services) -> None:
    assert services.auth is not None

    async def database_down(*args: object, **kwargs: object) -> None:
        raise RuntimeError("connection to 10.0.0.5 refused (dsn with a secret)")

    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        await register(client)
        token = (await login(client)).json()["access_token"]
        services.auth.users.get_user = database_down  # type: ignore[method-assign]
        answer = await client.get("/api/v1/me", headers=bearer(token))
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "internal_error"
    assert "10.0.0.5" not in answer.text
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"
