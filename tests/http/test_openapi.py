"""/openapi.json describes exactly the routes the app serves."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from starlette.routing import Route

from penpay.engine import ActorSystem, open_actor_system
from penpay.http import Services, create_app
from penpay.http.openapi import document, operations


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with open_actor_system() as system:
        yield system


async def test_the_document_and_the_routes_list_the_same_operations(system: ActorSystem) -> None:
    app = create_app(Services(system=system))
    served = {
        (method, route.path)
        for route in app.routes if isinstance(route, Route)
        for method in (route.methods or ()) if method != "HEAD"
    }
    assert served == operations()


def test_the_document_is_openapi_3_1_with_schemas_for_every_body() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    deposit = doc["paths"]["/api/v1/deposits"]["post"]
    schema_ref = deposit["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = schema_ref.rsplit("/", 1)[1]
    body = doc["components"]["schemas"][name]
    assert set(body["required"]) == {"amount_cents", "currency"}
    assert deposit["parameters"][0]["name"] == "Idempotency-Key"
    assert deposit["security"] == [{"bearer": []}]
    assert "202" in deposit["responses"]
    assert doc["components"]["schemas"]["Problem"]["required"][-1] == "errors"
