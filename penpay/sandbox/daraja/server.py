"""Serving the Daraja sandbox over real sockets with hypercorn on trio."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from penpay.sandbox.daraja.config import DarajaSandboxConfig
from penpay.sandbox.daraja.sandbox import DarajaSandbox, _utc_now


async def serve_daraja_sandbox(
    host: str,
    port: int,
    *,
    sandbox: DarajaSandbox | None = None,
    config: DarajaSandboxConfig | None = None,
    callback_http: httpx.AsyncClient | None = None,
    wall_clock: Callable[[], datetime] = _utc_now,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[tuple[DarajaSandbox, str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a sandbox on ``host:port`` (0 picks a free port) until cancelled.

    ``task_status.started`` reports ``(sandbox, base_url)``, e.g.
    ``sandbox, url = await nursery.start(serve_daraja_sandbox, "127.0.0.1", 0)``.
    Without ``callback_http`` a plain ``httpx.AsyncClient`` is made (and closed)
    for delivering callbacks.
    """
    async with _callback_client(callback_http) as http:
        sb = sandbox or DarajaSandbox(config, callback_http=http, wall_clock=wall_clock, rng=rng)
        hc = Config()
        hc.bind = [f"{host}:{port}"]
        hc.accesslog = None
        hc.errorlog = None
        async with trio.open_nursery() as nursery:
            await nursery.start(sb.run)
            binds: list[str] = await nursery.start(_serve, sb, hc)
            task_status.started((sb, binds[0]))


async def _serve(sb: DarajaSandbox, hc: Config, *, task_status: trio.TaskStatus[list[str]]) -> None:
    # hypercorn's ASGI protocol types are narrower than Starlette's signature.
    await serve(cast(Any, sb.app), hc, task_status=task_status)


@asynccontextmanager
async def _callback_client(given: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    """Use the caller's client as is, or own a fresh one for the duration."""
    if given is not None:
        yield given
        return
    async with httpx.AsyncClient() as owned:
        yield owned
