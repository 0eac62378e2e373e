"""Small HTTP helpers shared by the identity tests."""

from __future__ import annotations

from typing import Any

import httpx

PASSWORD = "correct horse battery"


async def register(
    client: httpx.AsyncClient,
    email: str = "wanjiru@example.com",
    phone: str = "0712345678",
    password: str = PASSWORD,
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/register",
        json={"email": email, "phone_number": phone, "password": password},
    )


async def login(
    client: httpx.AsyncClient,
    email: str = "wanjiru@example.com",
    password: str = PASSWORD,
    device_id: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"email": email, "password": password}
    if device_id is not None:
        body["device_id"] = device_id
    return await client.post("/api/v1/auth/login", json=body)


async def token_for(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    response = await login(client, email, password)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
