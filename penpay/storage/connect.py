"""Start-up: reach the database, however long it takes, and say when ready.

PenPay may start before its database (containers, a host reboot). Rather than
crash-looping, :func:`connect_with_retry` logs one clear line per failed
attempt and retries with exponential back-off; meanwhile :class:`Readiness`
stays false so ``/readyz`` answers 503 and no traffic is routed here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import trio

from penpay.errors import ConfigurationError
from penpay.storage.pg import (
    Database,
    DatabaseError,
    DatabaseMisconfigured,
    QueryFailed,
    open_database,
)

log = logging.getLogger("penpay.storage.connect")


class Readiness:
    """Whether storage is usable; ``readiness()`` is what ``/readyz`` asks."""

    def __init__(self) -> None:
        self.ready = False
        self.reason = "starting: database not connected yet"

    def __call__(self) -> bool:
        return self.ready

    def set_ready(self) -> None:
        self.ready = True
        self.reason = "ready"

    def set_not_ready(self, reason: str) -> None:
        self.ready = False
        self.reason = reason


def redact(url: str) -> str:
    """``url`` without its password (in the userinfo or a ``password=`` option), for logs."""
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "password" for name, _ in query):
        hidden = [(name, "***" if name == "password" else value) for name, value in query]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    return urlunsplit(parts)


async def connect_with_retry(
    url: str,
    *,
    readiness: Readiness | None = None,
    backoff_min_s: float = 0.1,
    backoff_max_s: float = 5.0,
    attempts_max: int | None = None,
    pool_size_max: int = 8,
    on_retry: Callable[[int, DatabaseError], None] | None = None,
) -> Database:
    """Open a pool to ``url``, retrying with back-off until the server answers.

    ``attempts_max=None`` retries forever (the normal start-up); otherwise
    the last error is raised after that many attempts. ``on_retry(attempt,
    error)`` is called after each failure (tests use it to wait for one).
    """
    assert 0 < backoff_min_s <= backoff_max_s
    delay_s = backoff_min_s
    attempt = 0
    while True:
        attempt += 1
        try:
            db = await open_database(url, pool_size_max=pool_size_max)
        except DatabaseError as exc:
            if _cannot_heal(exc):
                raise ConfigurationError(f"database {redact(url)}: {exc}") from None
            reason = f"database {redact(url)} unreachable: {exc}"
            if readiness is not None:
                readiness.set_not_ready(reason)
            if attempts_max is not None and attempt >= attempts_max:
                log.error("%s; giving up after %d attempts", reason, attempt)
                raise
            log.warning("%s; attempt %d, retrying in %.2f s", reason, attempt, delay_s)
            if on_retry is not None:
                on_retry(attempt, exc)
            await trio.sleep(delay_s)
            delay_s = min(delay_s * 2, backoff_max_s)
            continue
        log.info("database %s connected after %d attempt(s)", redact(url), attempt)
        if readiness is not None:
            readiness.set_ready()
        return db


#: SQLSTATEs a retry cannot cure: the role or password (class 28), the database's name.
_MISCONFIGURED_SQLSTATES = ("28", "3D000")


def _cannot_heal(error: DatabaseError) -> bool:
    """A malformed URL, a wrong password or database name: a configuration to fix."""
    if isinstance(error, DatabaseMisconfigured):
        return True
    state = getattr(error, "sqlstate", None) or ""
    return isinstance(error, QueryFailed) and state.startswith(_MISCONFIGURED_SQLSTATES)
