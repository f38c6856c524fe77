"""The database: opened once per process, handing out one connection (one transaction) per
request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from customer_metrics.errors import Unavailable
from customer_metrics.storage import dialect, native
from customer_metrics.storage.models import TENANT_TABLES

log = logging.getLogger("customer_metrics.storage")


def is_connection_lost(error: BaseException) -> bool:
    """The database connection broke under a statement (a restart, a killed backend): the
    pool has already dropped it, and the client may simply retry."""
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


class _Flush:
    """One round of the barrier: the requests that joined it, woken together."""

    __slots__ = ("done", "failed")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.failed = False


class DurabilityBarrier:
    """Group commit for transactions committed with `synchronous_commit` off: `wait()`
    returns once every transaction committed before it was called is on disk.

    One synchronous commit that writes WAL (`native.FLUSH_WAL`) on a connection of the
    barrier's own flushes the WAL up to its commit record, and WAL is flushed in order, so
    every commit that finished before that statement was sent is durable when it returns.
    Requests that arrive while a flush is under way join the next one: one round trip serves
    every request waiting meanwhile, instead of one each. A connection of its own: requests
    wait while holding theirs, so the pool may have none."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._connection: asyncpg.Connection | None = None
        self._next: _Flush | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def wait(self) -> bool:
        """True once durable; False when the barrier could not flush (its connection
        failed): the caller then makes sure on its own connection."""
        flush = self._next
        if flush is None:
            flush = self._next = _Flush()
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush_each())
        await flush.done.wait()
        return not flush.failed

    async def _flush_each(self) -> None:
        while (flush := self._next) is not None:
            self._next = None
            try:
                if self._connection is None or self._connection.is_closed():
                    self._connection = await asyncpg.connect(
                        self._dsn,
                        timeout=dialect.POOL_TIMEOUT,
                        server_settings={"synchronous_commit": "on"},
                    )
                # Bounded: a connection that died silently must not hold every create.
                await self._connection.execute(native.FLUSH_WAL, timeout=dialect.POOL_TIMEOUT)
            except Exception as error:  # the waiters fall back: see wait()
                log.warning("durability barrier failed, requests flush alone: %s", error)
                flush.failed = True
                await self._drop()
            flush.done.set()

    async def _drop(self) -> None:
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
        if (pending := self._next) is not None:  # its waiters flush on their own
            self._next = None
            pending.failed = True
            pending.done.set()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close(timeout=5)
            self._connection = None


class Database:
    """SQLite runs through SQLAlchemy's engine (aiosqlite); PostgreSQL requests run on an
    asyncpg pool (see storage/native.py). The SQLAlchemy engine stays available on both for
    migrations and checks."""

    def __init__(self, url: str, pool_size: int = 20) -> None:
        self.url = dialect.async_url(url)
        self.is_sqlite = dialect.is_sqlite(self.url)
        self.pool_size = pool_size
        if self.is_sqlite:
            dialect.ensure_sqlite_dir(self.url)
        self.engine: AsyncEngine = create_async_engine(
            self.url, **dialect.engine_options(self.url, pool_size)
        )
        if self.is_sqlite:
            dialect.install_sqlite_transactions(self.engine)
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        # Requests take turns for the pool's connections first come, first served. asyncpg's
        # own queue lets a newcomer take a connection that was just handed to a waiter, which
        # sends that waiter to the back of the line again: under load a few requests waited
        # 10-20x the median (p99 330 ms at p50 24 ms); with the turns, p99 ≈ 1.6x p50.
        self._turns = asyncio.Semaphore(pool_size)
        self.durability = (
            None if self.is_sqlite else DurabilityBarrier(dialect.native_dsn(self.url))
        )
        # Whether row-level security filters tenant tables for the connected role: learnt at
        # the pool's first connection (PostgreSQL only).
        self.row_security = False

    async def connect(self, *, read_only: bool) -> AsyncConnection:
        try:
            conn = await self.engine.connect()
        except Exception as error:  # whatever stops a connect is an outage
            raise _unavailable(error) from None
        if read_only:
            await conn.execution_options(**{dialect.READ_ONLY: True})
        return conn

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    pool = await asyncpg.create_pool(
                        dialect.native_dsn(self.url),
                        min_size=0,
                        max_size=self.pool_size,
                        timeout=dialect.POOL_TIMEOUT,  # to connect
                        init=native.init_connection,
                        reset=native.keep_connection,
                        # Open connections stay open (as SQLAlchemy's pools keep theirs): an
                        # inactivity timer costs every request a timer set and cancelled.
                        max_inactive_connection_lifetime=0,
                    )
                    try:
                        async with pool.acquire() as connection:
                            self.row_security = await native.row_security_active(
                                connection, TENANT_TABLES
                            )
                    except BaseException:
                        await pool.close()
                        raise
                    self._pool = pool
        return self._pool

    async def acquire(self) -> asyncpg.Connection:
        if self._turns.locked():  # a timer only when there is a line to wait in
            try:
                async with asyncio.timeout(dialect.POOL_TIMEOUT):
                    await self._turns.acquire()
            except TimeoutError as error:
                raise _unavailable(error) from None
        else:
            await self._turns.acquire()
        try:
            pool = await self.pool()
            # A turn means a connection is free or may be opened (bounded by the connect
            # timeout): no `timeout=` here, which would cost a task per request.
            return await pool.acquire()
        except BaseException as error:
            self._turns.release()
            if isinstance(error, Exception):  # whatever stops a connect is an outage
                raise _unavailable(error) from None
            raise

    async def release(self, connection: asyncpg.Connection, *, broken: bool = False) -> None:
        try:
            await self._give_back(connection, broken)
        finally:
            self._turns.release()

    async def _give_back(self, connection: asyncpg.Connection, broken: bool) -> None:
        assert self._pool is not None
        if broken:
            # A connection asyncpg saw die is already back in the pool, detached from this
            # handle, whose every method then raises.
            with contextlib.suppress(asyncpg.InterfaceError):
                if not connection.is_closed():
                    connection.terminate()  # the pool opens a new one in its place
        await self._pool.release(connection)

    async def dispose(self) -> None:
        if self.durability is not None:
            await self.durability.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await self.engine.dispose()


def _unavailable(error: BaseException) -> Unavailable:
    # No connection to be had (server down, too many clients — which asyncpg raises
    # unwrapped at connect — or the pool exhausted): retryable, so a 503, not a 500.
    log.warning("database connection unavailable: %s", error)
    return Unavailable("The database is busy or unreachable; retry shortly.")


class Session(ABC):
    """One request's connection and transaction. Routes commit before they return, so a write
    is durable before its response leaves; closing without a commit rolls back.

    `connection` is what repositories execute on: SQLAlchemy's `AsyncConnection` on SQLite,
    a `NativeConnection` with the same `execute` on PostgreSQL."""

    # Typed as SQLAlchemy's: NativeConnection offers the same `execute`, `exec_driver_sql`
    # and `dialect`, with results that answer the same calls.
    connection: AsyncConnection

    def __init__(self) -> None:
        # Set while an idempotency key is claimed: the route's commit then waits for the edge,
        # which stores the response in the same transaction and commits both together.
        self.deferred = False

    @property
    def autocommit(self) -> bool:
        return False

    def scope(self, organization_id: int) -> None:
        """The organization the statements from here on act for. Repositories filter by it
        themselves; on PostgreSQL under row-level security each transaction also names it
        to the database, so a statement that forgets its filter sees no other tenant's rows.
        Set before the first statement that needs it (the key lookup runs without it)."""
        return None  # SQLite: nothing to tell the database

    async def begin_transaction(self) -> None:
        """From here on, statements share one transaction until commit."""
        return None  # SQLite: every session is one transaction already

    async def commit(self) -> None:
        if not self.deferred:
            await self.commit_now()

    @abstractmethod
    async def commit_now(self) -> None: ...

    @abstractmethod
    async def rollback(self) -> None: ...

    def own_transactions(self) -> AbstractAsyncContextManager[bool]:
        """Statements inside commit one by one (PostgreSQL, autocommit).

        For a write that takes a hot lock (the per-organization counter): with its own
        transaction the lock is released by the same round trip that took it, instead of
        waiting for the application to send COMMIT (under row-level security, by the COMMIT
        sent right after it). Anything the request wrote before is committed first.
        Statements inside may also commit without waiting for the disk (asynchronous
        commit): leaving the block without an error waits until all of them are durable.
        Under an idempotency claim, and on SQLite (one writer at a time anyway), statements
        stay in the request's transaction. Yields whether they commit one by one."""
        return _shared_transaction()

    @abstractmethod
    async def close(self) -> None: ...


@asynccontextmanager
async def _shared_transaction() -> AsyncIterator[bool]:
    yield False


class SqliteSession(Session):
    """With `reads_first` (a write request's session, `lazy_transaction`), statements run in
    a read transaction (a deferred BEGIN: no lock) until `begin_transaction()`; from then on
    in a write transaction (BEGIN IMMEDIATE), which holds the database's one write lock to
    the commit. The key lookup, and a route's checks before it writes, do not hold it."""

    def __init__(self, connection: AsyncConnection, *, reads_first: bool = False) -> None:
        super().__init__()
        self.connection = connection
        self._reads_first = reads_first

    async def begin_transaction(self) -> None:
        if not self._reads_first:
            return
        self._reads_first = False
        if self.connection.in_transaction():
            await self.connection.commit()  # the reads' transaction: nothing was written
        await self.connection.execution_options(**{dialect.READ_ONLY: False})

    async def commit_now(self) -> None:
        await self.connection.commit()

    async def rollback(self) -> None:
        await self.connection.rollback()

    async def close(self) -> None:
        await self.connection.close()


class PostgresSession(Session):
    """Starts without a transaction when asked (`lazy_transaction`): the key lookup and reads
    need none, and each BEGIN/COMMIT saved is a round trip. A write calls
    `begin_transaction()`; BEGIN is sent with its first statement."""

    def __init__(self, database: Database, connection: native.NativeConnection) -> None:
        super().__init__()
        self._database = database
        self.native = connection
        self.connection = connection  # type: ignore[assignment]
        self._closed = False

    @property
    def autocommit(self) -> bool:
        return bool(self.native.autocommit)

    def scope(self, organization_id: int) -> None:
        self.native.scope(organization_id)

    async def begin_transaction(self) -> None:
        self.native.autocommit = False

    async def commit_now(self) -> None:
        await self.native.end(commit=True)

    async def rollback(self) -> None:
        await self.native.end(commit=False)

    @asynccontextmanager
    async def _own(self) -> AsyncIterator[bool]:
        conn = self.native
        was_autocommit = conn.autocommit
        if conn.wrote:
            await conn.end(commit=True)
        # Otherwise a transaction that only read (row-level security opens one for reads)
        # carries on into the statement's, which commits right after it.
        conn.autocommit = True
        try:
            yield True
            await conn.wait_durable(self._database.durability)
        finally:
            conn.autocommit = was_autocommit

    def own_transactions(self) -> AbstractAsyncContextManager[bool]:
        if self.deferred:
            return _shared_transaction()
        return self._own()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self.native
        try:
            if conn.in_transaction and not conn.broken:
                await conn.end(commit=False)
        except Exception:  # the connection broke: it is dropped below
            log.debug("rollback on close failed", exc_info=True)
        finally:
            await self._database.release(conn.raw, broken=conn.broken)


async def open_session(
    database: Database, *, read_only: bool, lazy_transaction: bool = False
) -> Session:
    """With `lazy_transaction`, a write session only reads until `begin_transaction()`: on
    PostgreSQL each statement runs on its own (reads need no transaction, and each round
    trip saved counts); on SQLite they share a read transaction, which takes no lock."""
    if database.is_sqlite:
        reads_first = lazy_transaction and not read_only
        sqlite = await database.connect(read_only=read_only or reads_first)
        return SqliteSession(sqlite, reads_first=reads_first)
    raw = await database.acquire()
    connection = native.NativeConnection(
        raw, autocommit=lazy_transaction, row_security=database.row_security
    )
    return PostgresSession(database, connection)
