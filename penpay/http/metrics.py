"""``GET /metrics``: Prometheus text, from ``prometheus_client``.

Request counts and latencies come from a small ASGI middleware, labelled by
route template (``/api/v1/transactions/{id}``), never by raw path, so the
label set stays bounded. Actor counts, mailbox depths, restarts, journal
batches and transactions by status are read when scraped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from penpay.engine import ActorSystem
from penpay.errors import PenPayError

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class _EngineCollector(Collector):
    """Reads the actor system (and the journal, when it counts) at scrape time."""

    def __init__(self, system: ActorSystem) -> None:
        self.system = system
        self.transactions_by_status: dict[str, int] = {}

    def collect(self) -> Iterator[Any]:
        actors = GaugeMetricFamily(
            "penpay_actors", "Live and parked actors", labels=["kind", "status"]
        )
        depth = GaugeMetricFamily("penpay_mailbox_depth", "Queued messages", labels=["kind"])
        restarts = CounterMetricFamily(
            "penpay_actor_restarts", "Actor restarts since the process started", labels=["kind"]
        )
        by_status: Tally[tuple[str, str]] = Tally()
        depths: Tally[str] = Tally()
        for info in self.system.actors():
            by_status[(info.kind, info.status.value)] += 1
            depths[info.kind] += info.mailbox_depth
        for (kind, status), count in sorted(by_status.items()):
            actors.add_metric([kind, status], count)
        for kind, total in sorted(depths.items()):
            depth.add_metric([kind], total)
        # Kept by the system, not summed over live actors: one that passivates
        # must not make a counter go down (Prometheus would read a reset).
        for kind, total in sorted(self.system.restarts_by_kind.items()):
            restarts.add_metric([kind], total)
        yield from (actors, depth, restarts)
        journal: Any = self.system.journal  # the PostgreSQL journal counts its batches
        if hasattr(journal, "batches_committed"):
            batches = CounterMetricFamily("penpay_journal_batches", "Journal batches committed")
            batches.add_metric([], journal.batches_committed)
            events = CounterMetricFamily("penpay_journal_events", "Journal events committed")
            events.add_metric([], journal.events_committed)
            yield from (batches, events)
        transactions = GaugeMetricFamily(
            "penpay_transactions", "Transactions by status", labels=["status"]
        )
        for status, count in sorted(self.transactions_by_status.items()):
            transactions.add_metric([status], count)
        yield transactions


class Metrics:
    """One registry per app, so tests and several apps in a process never collide."""

    def __init__(self, system: ActorSystem) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "penpay_http_requests", "HTTP requests answered", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "penpay_http_request_duration_seconds", "Time to answer", ["method", "route"],
            buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.engine = _EngineCollector(system)
        self.registry.register(self.engine)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


async def metrics_route(request: Request) -> Response:
    services = request.app.state.services
    metrics: Metrics = request.app.state.metrics
    if services.payments is not None:
        try:
            counts = await services.payments.index.count_by_status()
        except PenPayError as exc:  # the database is down: the rest is still worth scraping
            log.warning("transactions by status not counted: %s", exc)
        else:
            metrics.engine.transactions_by_status = counts
    return Response(metrics.render(), media_type=CONTENT_TYPE)
