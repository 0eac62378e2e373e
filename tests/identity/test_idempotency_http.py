"""``@idempotent`` over a real socket, against the in-memory and PostgreSQL stores."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from penpay.http import Services, create_app
from penpay.http.idempotency import idempotent
from penpay.http.problems import Problem
from penpay.http.responses import json_response
from tests.http.server import serving
from tests.identity.helpers import bearer, register, token_for

pytestmark = pytest.mark.integration

PATH = "/api/v1/test/charges"


class Charges:
    """A stand-in money endpoint that counts how often it really ran."""

    def __init__(self) -> None:
        self.executions = 0
        self.gate: trio.Event | None = None
        self.fail_next_with: int | None = None

    async def create(self, request: Request) -> Response:
        self.executions += 1
        body = await request.json()  # the wrapper already read the body; it is cached
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next_with is not None:
            status, self.fail_next_with = self.fail_next_with, None
            if status == 500:
                raise RuntimeError("transient failure")
            raise Problem(status, "temporarily_unavailable", "try again")
        if body.get("amount_cents", 0) <= 0:
            raise Problem(422, "amount_below_minimum", "amount must be positive")
        charge_id = f"ch_{self.executions}"
        return json_response(
            {"charge_id": charge_id, "amount_cents": body["amount_cents"]},
            status_code=202,
            headers={"Location": f"{PATH}/{charge_id}"},
        )


def app_with(services: Services, charges: Charges) -> Starlette:
    app = create_app(services)
    app.router.routes.append(Route(PATH, idempotent(charges.create), methods=["POST"]))
    return app


Post = Callable[..., Awaitable[httpx.Response]]


async def _user_token(client: httpx.AsyncClient, email: str = "wanjiru@example.com") -> str:
    await register(client, email=email)
    return await token_for(client, email)


async def test_missing_and_malformed_keys(services: Services) -> None:
    charges = Charges()
    async with serving(app_with(services, charges)) as url, httpx.AsyncClient(
        base_url=url
    ) as client:
        token = await _user_token(client)
        missing = await client.post(PATH, json={"amount_cents": 100}, headers=bearer(token))
        short = await client.post(
            PATH, json={"amount_cents": 100}, headers={**bearer(token), "Idempotency-Key": "abc"}
        )
        spaces = await client.post(
            PATH, json={"amount_cents": 100},
            headers={**bearer(token), "Idempotency-Key": "has spaces inside"},
        )  # fmt: skip
        anonymous = await client.post(
            PATH, json={"amount_cents": 100}, headers={"Idempotency-Key": "k" * 16}
        )
    assert missing.status_code == 400
    assert missing.json()["code"] == "idempotency_key_missing"
    assert short.status_code == spaces.status_code == 400
    assert short.json()["code"] == "idempotency_key_invalid"
    assert anonymous.status_code == 401
    assert charges.executions == 0


async def test_replay_returns_the_stored_answer_without_a_second_effect(
    services: Services,
) -> None:
    charges = Charges()
    async with serving(app_with(services, charges)) as url, httpx.AsyncClient(
        base_url=url
    ) as client:
        headers = {**bearer(await _user_token(client)), "Idempotency-Key": "key-0001-replay"}
        first = await client.post(PATH, content=b'{"amount_cents": 500, "note": "a"}',
                                  headers=headers)  # fmt: skip
        # Same object, other key order and spacing: the same request.
        again = await client.post(PATH, content=b'{"note":"a","amount_cents":500}',
                                  headers=headers)  # fmt: skip
        other_body = await client.post(PATH, json={"amount_cents": 501, "note": "a"},
                                       headers=headers)  # fmt: skip
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert other_body.status_code == 422
    assert other_body.json()["code"] == "idempotency_key_reused"
    assert charges.executions == 1


async def test_keys_are_scoped_per_user(services: Services) -> None:
    charges = Charges()
    async with serving(app_with(services, charges)) as url, httpx.AsyncClient(
        base_url=url
    ) as client:
        a = await _user_token(client, "a@example.com")
        b = await _user_token(client, "b@example.com")
        for token in (a, b):
            response = await client.post(
                PATH, json={"amount_cents": 1},
                headers={**bearer(token), "Idempotency-Key": "shared-key-1"},
            )  # fmt: skip
            assert response.status_code == 202
            assert "idempotent-replayed" not in response.headers
    assert charges.executions == 2


async def test_business_refusals_are_stored_transient_failures_are_not(
    services: Services,
) -> None:
    charges = Charges()
    async with serving(app_with(services, charges)) as url, httpx.AsyncClient(
        base_url=url
    ) as client:
        token = await _user_token(client)
        refused = {**bearer(token), "Idempotency-Key": "key-refused-1"}
        first = await client.post(PATH, json={"amount_cents": 0}, headers=refused)
        replay = await client.post(PATH, json={"amount_cents": 0}, headers=refused)
        assert first.status_code == replay.status_code == 422
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["code"] == "amount_below_minimum"
        assert charges.executions == 1

        flaky = {**bearer(token), "Idempotency-Key": "key-flaky-001"}
        for status in (503, 500):
            charges.fail_next_with = status
            failed = await client.post(PATH, json={"amount_cents": 5}, headers=flaky)
            assert failed.status_code == status
            assert "idempotent-replayed" not in failed.headers
        retried = await client.post(PATH, json={"amount_cents": 5}, headers=flaky)
        replayed = await client.post(PATH, json={"amount_cents": 5}, headers=flaky)
    assert retried.status_code == 202
    assert "idempotent-replayed" not in retried.headers
    assert replayed.headers["idempotent-replayed"] == "true"
    assert charges.executions == 1 + 3  # two failures and one success


async def test_fifty_concurrent_identical_posts_execute_once(services: Services) -> None:
    charges = Charges()
    charges.gate = trio.Event()
    results: list[httpx.Response] = []
    in_progress = 0
    async with serving(app_with(services, charges)) as url, httpx.AsyncClient(
        base_url=url, limits=httpx.Limits(max_connections=60)
    ) as client:
        headers = {**bearer(await _user_token(client)), "Idempotency-Key": "fifty-at-once"}

        async def post() -> None:
            nonlocal in_progress
            response = await client.post(PATH, json={"amount_cents": 700}, headers=headers)
            results.append(response)
            if response.status_code == 409:
                in_progress += 1
                if in_progress == 49:  # everyone else has been turned away: let the first finish
                    assert charges.gate is not None
                    charges.gate.set()

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(post)
        after = await client.post(PATH, json={"amount_cents": 700}, headers=headers)
    assert charges.executions == 1
    statuses = sorted(r.status_code for r in results)
    assert statuses == [202] + [409] * 49
    conflict = next(r for r in results if r.status_code == 409)
    assert conflict.json()["code"] == "idempotency_request_in_progress"
    assert conflict.headers["retry-after"] == "1"
    assert after.status_code == 202
    assert after.headers["idempotent-replayed"] == "true"
