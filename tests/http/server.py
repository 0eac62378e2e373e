"""Serve an ASGI app on a real loopback socket for the length of a test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.types import ASGIApp


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Yield the base URL of ``app`` listening on 127.0.0.1 (a free port)."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            lambda task_status: serve(  # type: ignore[arg-type]
                app, config, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        try:
            yield urls[0]
        finally:
            stop.set()
