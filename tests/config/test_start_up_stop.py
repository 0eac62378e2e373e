"""A stop asked for while PenPay is still starting ends the start-up.

SIGINT/SIGTERM were only honoured once the server listened: while the
database was unreachable, only SIGKILL stopped the process.
"""

from __future__ import annotations

from functools import partial

import trio
import trio.testing

from penpay.config import load_settings
from penpay.server import serve


async def test_a_stop_during_start_up_ends_it() -> None:
    settings = load_settings(
        {},
        database_url="postgresql://postgres@127.0.0.1:1/penpay",  # nothing listens there
        redis_url="redis://127.0.0.1:1",
    )
    stop = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(serve, settings, stop=stop))  # retries the db for ever
            await trio.testing.wait_all_tasks_blocked()  # it is connecting, or backing off
            stop.set()
