"""``run.py serve``: PenPay's trio main.

One trio run hosts everything: the actor system, the HTTP app (Hypercorn's
trio worker) and, inside ``trio_asyncio.open_loop()``, the asyncio-only
database driver, so they all share one event loop. SIGINT and SIGTERM shut
down in order: stop taking requests, passivate every actor, cancel the rest.
"""

from __future__ import annotations

import logging
import signal

import trio
import trio_asyncio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from penpay.config import Settings, load_settings
from penpay.engine import EngineConfig, SupervisionPolicy, open_actor_system
from penpay.http import Services, create_app

log = logging.getLogger("penpay.server")


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        mailbox_capacity=settings.mailbox_capacity,
        passivate_after_s=settings.passivate_after_s,
        ask_timeout_s=settings.ask_timeout_s,
        snapshot_every_events=settings.snapshot_every_events,
        supervision=SupervisionPolicy(
            backoff_min_s=settings.restart_backoff_min_s,
            backoff_max_s=settings.restart_backoff_max_s,
            max_restarts=settings.restart_intensity_max,
            window_s=settings.restart_intensity_window_s,
        ),
    )


def hypercorn_config(settings: Settings) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{settings.http_host}:{settings.http_port}"]
    config.accesslog = None
    config.keep_alive_timeout = 30
    config.h11_max_incomplete_size = 64 * 1024
    return config


async def _watch_signals(
    stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Turn SIGINT/SIGTERM into an orderly stop; later signals are logged, not raised."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if stop.is_set():
                log.info("received %s again; already shutting down", name)
            else:
                log.info("received %s; shutting down", name)
                stop.set()


async def serve(
    settings: Settings, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run PenPay until SIGINT/SIGTERM; ``task_status`` gets the bound addresses."""
    stop = trio.Event()
    async with trio.open_nursery() as signals_nursery:
        await signals_nursery.start(_watch_signals, stop)
        async with trio_asyncio.open_loop(), open_actor_system(
            config=engine_config(settings)
        ) as system:
            services = Services(system=system, readiness={"engine": lambda: True})
            app = create_app(services)
            await hypercorn_serve(
                app,  # type: ignore[arg-type]
                hypercorn_config(settings),
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        log.info("stopped")
        signals_nursery.cancel_scope.cancel()


def main() -> int:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info("PenPay listening on http://%s:%d", settings.http_host, settings.http_port)
    trio.run(serve, settings)
    return 0
