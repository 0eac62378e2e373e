"""A TCP proxy in front of PostgreSQL that a test can cut or keep closed."""

from __future__ import annotations

import functools
import socket
from urllib.parse import parse_qs, urlsplit

import trio


def _target_of(url: str) -> tuple[str, int | str]:
    parts = urlsplit(url)
    port = parts.port or 5432
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    if host.startswith("/"):
        return ("unix", f"{host}/.s.PGSQL.{port}")
    return (host, port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgProxy:
    """Forwards 127.0.0.1:``port`` to the server behind ``target_url``.

    ``serve`` starts listening (until then connections are refused);
    ``cut()`` drops every live connection at once, like a network failure.
    """

    def __init__(self, target_url: str, port: int | None = None) -> None:
        self.target = _target_of(target_url)
        self.port = port or free_port()
        self.connections = 0
        self._scopes: set[trio.CancelScope] = set()
        self._cut_at_request_bytes: int | None = None
        self.cut_done = trio.Event()

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _open_upstream(self) -> trio.SocketStream:
        kind, where = self.target
        if kind == "unix":
            return await trio.open_unix_socket(str(where))
        return await trio.open_tcp_stream(kind, int(where))

    async def _pipe(
        self, src: trio.SocketStream, dst: trio.SocketStream, *, upstream: bool = False
    ) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
                armed = self._cut_at_request_bytes
                if upstream and armed is not None and len(data) >= armed:
                    # The request reached the server; its answer never comes back.
                    self._cut_at_request_bytes = None
                    self.cut()
                    self.cut_done.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                upstream = await self._open_upstream()
                async with client, upstream, trio.open_nursery() as nursery:
                    to_server = functools.partial(self._pipe, client, upstream, upstream=True)
                    nursery.start_soon(to_server)
                    await self._pipe(upstream, client)
                    nursery.cancel_scope.cancel()
            finally:
                self._scopes.discard(scope)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def cut_after_request(self, request_bytes_min: int) -> None:
        """Cut everything right after forwarding a request of at least that size.

        Small reads pass; a group-commit batch is large, so this cuts the
        writer after the server has its batch but before the answer returns:
        the "commit sent, answer lost" case.
        """
        self._cut_at_request_bytes = request_bytes_min

    def cut(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()
