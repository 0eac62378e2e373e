"""asyncpg under trio, through an asyncio event loop on its own thread.

asyncpg is asyncio-only. Of the two ways to call it from trio, this one
measured faster here (see ``doc/storage.md``): a dedicated asyncio loop runs
in a daemon thread and every call crosses over with
``asyncio.run_coroutine_threadsafe``; the trio task parks on
``trio.lowlevel.wait_task_rescheduled`` and is woken through its trio token,
so no trio worker thread is held per call. The protocol work then runs on the
second core, in parallel with the actors.

Nothing outside this module sees asyncio: callers use :class:`Database` (a
pool) and :class:`Connection` (one dedicated connection) with the usual
``execute`` / ``fetch`` / ``fetchval`` / ``fetchrow`` /
``copy_records_to_table`` / ``transaction`` methods.

Every driver failure is re-raised as :class:`DatabaseError` subclasses from
this module, so callers need not know asyncpg's exception tree:
:class:`ConnectionLost` when the outcome of the call is unknown (the socket
died), :class:`QueryFailed` when the server refused the statement (nothing
was done).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeAlias, TypeVar

import asyncpg  # type: ignore[import-untyped]
import trio

from penpay.errors import PenPayError

T = TypeVar("T")

#: A result row (an ``asyncpg.Record``): index it by column name.
Record: TypeAlias = Mapping[str, Any]

#: Seconds a connection attempt may take before it counts as failed.
CONNECT_TIMEOUT_S = 10.0


class DatabaseError(PenPayError):
    """Base class of database failures seen through the bridge."""


class ConnectionLost(DatabaseError):
    """The connection failed during the call: whether it took effect is unknown."""


class DatabaseMisconfigured(DatabaseError):
    """The URL or the credentials are wrong: trying again cannot help."""


class QueryFailed(DatabaseError):
    """The server rejected the statement; ``sqlstate`` says why."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


#: Server errors that end the connection: whatever was in flight may or may not
#: have committed (asyncpg reports a socket closed mid-statement as SQLSTATE 08003).
_CONNECTION_ENDED = (
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.IdleSessionTimeoutError,
    asyncpg.IdleInTransactionSessionTimeoutError,
)


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, asyncpg.ClientConfigurationError):  # a malformed URL or option
        return DatabaseMisconfigured(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.PostgresError):
        if isinstance(exc, _CONNECTION_ENDED):
            return ConnectionLost(f"{type(exc).__name__}: {exc}")
        return QueryFailed(f"{type(exc).__name__}: {exc}", getattr(exc, "sqlstate", None))
    if isinstance(
        exc,
        asyncpg.InterfaceError | OSError | asyncio.TimeoutError | ConnectionError | EOFError,
    ):
        return ConnectionLost(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.InternalClientError):
        # The connection's protocol state is broken ("another operation is in
        # progress"), typically after the server ended it mid-operation: it
        # cannot be used again, exactly as if it had been lost.
        return ConnectionLost(f"{type(exc).__name__}: {exc}")
    return exc


class _LoopThread:
    """One asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        # Built directly: trio-asyncio, if imported, patches new_event_loop().
        self.loop = asyncio.SelectorEventLoop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the loop; park this trio task until done.

        If the trio task is cancelled, the asyncio task is cancelled too and
        the trio task leaves at once (the asyncio side cleans up on its own).
        """

        async def runner() -> T:
            return await fn(*args, **kwargs)

        future = asyncio.run_coroutine_threadsafe(runner(), self.loop)
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()
        aborted = False

        def wake() -> None:
            if not aborted:
                trio.lowlevel.reschedule(task)

        def done(_: concurrent.futures.Future[T]) -> None:
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(wake)

        future.add_done_callback(done)

        def abort(_: Any) -> trio.lowlevel.Abort:
            nonlocal aborted
            aborted = True
            future.cancel()
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        try:
            return future.result()
        except BaseException as exc:
            translated = _translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


class Connection:
    """One dedicated connection (the journal writer keeps one for itself)."""

    def __init__(self, bridge: _LoopThread, raw: asyncpg.Connection) -> None:
        self._bridge = bridge
        self._raw = raw

    @property
    def backend_pid(self) -> int:
        return int(self._raw.get_server_pid())

    def is_closed(self) -> bool:
        return bool(self._raw.is_closed())

    async def execute(self, sql: str, *args: Any) -> str:
        return await self._bridge.call(self._raw.execute, sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        return await self._bridge.call(self._raw.fetch, sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        return await self._bridge.call(self._raw.fetchrow, sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._bridge.call(self._raw.fetchval, sql, *args)

    async def copy_records_to_table(
        self, table: str, records: Iterable[Sequence[Any]], columns: Sequence[str]
    ) -> str:
        return await self._bridge.call(
            self._raw.copy_records_to_table, table, records=records, columns=columns
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """BEGIN … COMMIT, or ROLLBACK if the block raises."""
        await self.execute("BEGIN")
        try:
            yield self
        except BaseException:
            with trio.CancelScope(shield=True):
                if not self._raw.is_closed():
                    try:
                        await self.execute("ROLLBACK")
                    except DatabaseError:
                        await self.aclose()
            raise
        await self.execute("COMMIT")

    async def aclose(self) -> None:
        if not self._raw.is_closed():
            try:
                await self._bridge.call(self._raw.close, timeout=5)
            except DatabaseError:
                self._raw.terminate()


class Database:
    """A pool of connections to one PostgreSQL database. Open with :func:`open_database`."""

    def __init__(self, bridge: _LoopThread, pool: asyncpg.Pool, url: str) -> None:
        self._bridge = bridge
        self._pool = pool
        self.url = url

    async def execute(self, sql: str, *args: Any) -> str:
        return await self._bridge.call(self._pool.execute, sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        return await self._bridge.call(self._pool.fetch, sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        return await self._bridge.call(self._pool.fetchrow, sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._bridge.call(self._pool.fetchval, sql, *args)

    async def copy_records_to_table(
        self, table: str, records: Iterable[Sequence[Any]], columns: Sequence[str]
    ) -> str:
        return await self._bridge.call(
            self._pool.copy_records_to_table, table, records=records, columns=columns
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A pooled connection inside BEGIN … COMMIT for the block."""
        async with self.acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Connection]:
        """Borrow one pooled connection for the block (e.g. session advisory locks)."""
        raw = await self._bridge.call(self._pool.acquire)
        try:
            yield Connection(self._bridge, raw)
        finally:
            with trio.CancelScope(shield=True):
                await self._bridge.call(self._pool.release, raw)

    async def connect(self, *, application_name: str = "penpay") -> Connection:
        """A new dedicated connection outside the pool; the caller closes it.

        ``application_name`` shows in ``pg_stat_activity`` (operators, tests).
        """
        raw = await self._bridge.call(
            asyncpg.connect,
            self.url,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": application_name},
        )
        return Connection(self._bridge, raw)

    async def aclose(self) -> None:
        try:
            await self._bridge.call(self._pool.close)
        except DatabaseError:
            self._pool.terminate()
        finally:
            self._bridge.stop()


async def open_database(url: str, *, pool_size_max: int = 8) -> Database:
    """Connect a pool to ``url``; raises :class:`ConnectionLost` if unreachable.

    The caller owns the result and must ``await db.aclose()``; prefer
    :func:`database` for scoped use.
    """
    bridge = _LoopThread(name="penpay.storage.asyncpg")
    try:
        pool = await bridge.call(
            asyncpg.create_pool,
            url,
            min_size=1,
            max_size=pool_size_max,
            timeout=CONNECT_TIMEOUT_S,
        )
    except BaseException:
        bridge.stop()
        raise
    return Database(bridge, pool, url)


@asynccontextmanager
async def database(url: str, *, pool_size_max: int = 8) -> AsyncIterator[Database]:
    """``async with database(url) as db:`` — a pool for the duration of the block."""
    db = await open_database(url, pool_size_max=pool_size_max)
    try:
        yield db
    finally:
        with trio.CancelScope(shield=True):
            await db.aclose()
