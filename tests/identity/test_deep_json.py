"""A JSON body nested deeper than msgspec can follow is a 400 ``bad_request``, never a 500.

msgspec raises RecursionError, not DecodeError, for ``[[[[…]]]]`` past the
interpreter's recursion limit; it escaped ``read_json`` and the
``Idempotency-Key`` fingerprint as 500 ``internal_error``.
"""

from __future__ import annotations

import httpx
import pytest

from penpay.http import Services, create_app
from penpay.http.idempotency import fingerprint
from tests.http.server import serving
from tests.identity.helpers import bearer, register, token_for

pytestmark = pytest.mark.integration

DEEP = b"[" * 5000 + b"]" * 5000
DEEP_IN_OBJECT = b'{"email":"a@b.co","password":"x","device_id":' + DEEP + b"}"


def test_fingerprint_of_a_body_nested_too_deep_hashes_the_bytes() -> None:
    assert fingerprint("POST", "/r", DEEP) == fingerprint("POST", "/r", DEEP)
    assert fingerprint("POST", "/r", DEEP) != fingerprint("POST", "/r", DEEP + b" ")


@pytest.mark.parametrize("body", [DEEP, DEEP_IN_OBJECT], ids=["array", "in_object"])
async def test_login_with_a_body_nested_too_deep_is_400(services: Services, body: bytes) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        answer = await client.post("/api/v1/auth/login", content=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "bad_request"


async def test_idempotent_route_with_a_body_nested_too_deep_is_400(services: Services) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        await register(client)
        token = await token_for(client, "wanjiru@example.com")
        answer = await client.post(
            "/api/v1/deposits", content=DEEP,
            headers={**bearer(token), "Idempotency-Key": "key-00000001"},
        )  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "bad_request"
