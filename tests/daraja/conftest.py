"""Shared wiring: sandbox + callback receiver + client, all in-process.

The sandbox delivers callbacks through an ``httpx.AsyncClient`` whose
transport is the :class:`Receiver` app; the client reaches the sandbox
through ``httpx.ASGITransport``. Time is trio's (MockClock in most tests),
and the wall clock is a fixed anchor plus trio time, so every run is
deterministic.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from penpay.actors.daraja import STK_CALLBACK_ACK, DarajaClient, DarajaClientConfig
from penpay.sandbox.daraja import Credentials, DarajaSandbox, DarajaSandboxConfig

ANCHOR = datetime(2026, 9, 18, 12, 0, 0, tzinfo=UTC)  # 15:00 in Nairobi
SANDBOX_URL = "http://daraja.sandbox"
CALLBACK_BASE = "http://penpay.test"
KEY, SECRET = "test-key", "test-secret"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
PHONE = "254708374149"


def wall_clock() -> datetime:
    return ANCHOR + timedelta(seconds=trio.current_time())


def sandbox_config(**overrides: Any) -> DarajaSandboxConfig:
    values: dict[str, Any] = {
        "credentials": (Credentials(KEY, SECRET),),
        "default_customer_delay_s": 20.0,
        "result_delay_s": 5.0,
    }
    values.update(overrides)
    return DarajaSandboxConfig(**values)


def client_config(base_url: str = SANDBOX_URL, **overrides: Any) -> DarajaClientConfig:
    values: dict[str, Any] = {
        "base_url": base_url,
        "consumer_key": KEY,
        "consumer_secret": SECRET,
        "stk_shortcode": "174379",
        "stk_passkey": PASSKEY,
        "b2c_shortcode": "600992",
        "initiator_name": "testapi",
        "security_credential": "c2FuZGJveC1jcmVkZW50aWFs",
        "request_timeout_s": 30.0,
        "retry_backoff_s": 1.0,
    }
    values.update(overrides)
    return DarajaClientConfig(**values)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return msgspec.json.decode(self.raw)


@dataclass
class Receiver:
    """PenPay's side of callbacks: records every POST and acknowledges it."""

    received: list[Received] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            self.received.append(
                Received(request.url.path, dict(request.headers), await request.body())
            )
            self._changed.set()
            self._changed = trio.Event()
            return JSONResponse(STK_CALLBACK_ACK)

        return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])

    async def wait_for(self, count: int) -> list[Received]:
        while len(self.received) < count:
            await self._changed.wait()
        return self.received

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


@dataclass
class Env:
    sandbox: DarajaSandbox
    receiver: Receiver
    client: DarajaClient
    http: httpx.AsyncClient  # raw access to the sandbox

    async def token(self) -> str:
        response = await self.http.get(
            "/oauth/v1/generate?grant_type=client_credentials", auth=(KEY, SECRET)
        )
        assert response.status_code == 200
        token: str = response.json()["access_token"]
        return token

    async def post(self, path: str, body: Any, token: str | None = None) -> httpx.Response:
        token = token or await self.token()
        return await self.http.post(path, json=body, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def sandbox_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def client_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def env(
    autojump_clock: trio.testing.MockClock,
    sandbox_overrides: dict[str, Any],
    client_overrides: dict[str, Any],
) -> AsyncIterator[Env]:
    receiver = Receiver()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app)) as cb_http:
        sandbox = DarajaSandbox(
            sandbox_config(**sandbox_overrides),
            callback_http=cb_http,
            wall_clock=wall_clock,
            rng=random.Random(7),
        )
        async with (
            sandbox,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=sandbox.app), base_url=SANDBOX_URL
            ) as http,
        ):
            client = DarajaClient(
                http,
                client_config(**client_overrides),
                wall_clock=wall_clock,
                rng=random.Random(3),
            )
            yield Env(sandbox, receiver, client, http)
