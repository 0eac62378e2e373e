"""Operations routes and the error contract, over a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from penpay.engine import (
    ActorCrashed,
    ActorSystem,
    EngineConfig,
    SupervisionPolicy,
    open_actor_system,
)
from penpay.http import Services, create_app
from penpay.http.auth.testing import memory_auth, operator_headers
from tests.engine.sample_actors import Add, Counter, Crash
from tests.http.server import serving

pytestmark = pytest.mark.integration


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    policy = SupervisionPolicy(backoff_min_s=0.001, max_restarts=0)
    async with open_actor_system(config=EngineConfig(supervision=policy)) as system:
        yield system


async def test_healthz_and_security_headers(system: ActorSystem) -> None:
    app = create_app(Services(system=system))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "referrer-policy" in response.headers


async def test_readyz_names_what_is_down(system: ActorSystem) -> None:
    up = {"database": True}
    checks = {"engine": lambda: True, "database": lambda: up["database"]}
    app = create_app(Services(system=system, readiness=checks))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/readyz")).status_code == 200
        up["database"] = False
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not_ready", "checks": {"engine": True, "database": False}}


async def test_admin_lists_actors_and_reads_state(system: ActorSystem) -> None:
    await system.ref(Counter, "c1").ask(Add(3))
    with pytest.raises(ActorCrashed):  # max_restarts=0: the crash parks it
        await system.ref(Counter, "bad").ask(Crash())
    auth = memory_auth()
    app = create_app(Services(system=system, auth=auth))
    admin = await operator_headers(auth)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=admin) as client:
        listing = (await client.get("/api/v1/admin/actors")).json()["items"]
        by_key = {item["key"]: item for item in listing}
        assert by_key["c1"]["status"] == "running"
        assert by_key["c1"]["kind"] == "counter"
        assert by_key["bad"]["status"] == "failed"
        assert by_key["bad"]["failure"] == "RuntimeError: boom"
        failed = (await client.get("/api/v1/admin/actors", params={"status": "failed"})).json()
        assert [item["key"] for item in failed["items"]] == ["bad"]
        one = (await client.get("/api/v1/admin/actors/counter/c1")).json()
        assert one["state"] == {"sequence": 1, "state": {"total": 3, "history": [3]}}


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/admin/actors?limit=0", 422, "validation_failed"),
        ("/api/v1/admin/actors?status=sleepy", 422, "validation_failed"),
        ("/api/v1/admin/actors/no-such-kind/x", 404, "not_found"),
        ("/api/v1/admin/actors/counter/never-seen", 404, "not_found"),  # nothing activated
        ("/no/such/route", 404, "not_found"),
    ],
)
async def test_errors_are_problem_json_with_stable_codes(
    system: ActorSystem, path: str, status: int, code: str
) -> None:
    system.register(Counter)  # a known kind: an unknown key must still be 404
    auth = memory_auth()
    app = create_app(Services(system=system, auth=auth))
    admin = await operator_headers(auth)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=admin) as client:
        response = await client.get(path)
    assert system.info(Counter, "never-seen") is None  # and nothing was activated
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code and body["status"] == status
    assert set(body) == {"type", "title", "status", "detail", "code", "errors"}


async def test_an_unhandled_error_leaks_no_detail(system: ActorSystem) -> None:
    app = create_app(Services(system=system))

    async def explode(request: object) -> None:
        raise RuntimeError("secret internal detail")

    app.add_route("/explode", explode)  # type: ignore[arg-type]
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/explode")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "secret" not in response.text
