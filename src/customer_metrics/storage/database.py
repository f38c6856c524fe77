"""The engine: opened once per process, handing out one connection (one transaction) per
request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from customer_metrics.errors import Unavailable
from customer_metrics.storage import dialect

log = logging.getLogger("customer_metrics.storage")


def is_connection_lost(error: BaseException) -> bool:
    """The database connection broke under a statement (a restart, a killed backend): the
    pool has already dropped it, and the client may simply retry."""
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


class Database:
    def __init__(self, url: str, pool_size: int = 20) -> None:
        self.url = dialect.async_url(url)
        self.is_sqlite = dialect.is_sqlite(self.url)
        if self.is_sqlite:
            dialect.ensure_sqlite_dir(self.url)
        self.engine: AsyncEngine = create_async_engine(
            self.url, **dialect.engine_options(self.url, pool_size)
        )
        if self.is_sqlite:
            dialect.install_sqlite_transactions(self.engine)

    async def connect(self, *, read_only: bool) -> AsyncConnection:
        try:
            conn = await self.engine.connect()
        except Exception as error:  # whatever stops a connect is an outage
            # No connection to be had (server down, too many clients — which asyncpg raises
            # unwrapped at connect — or the pool exhausted): retryable, so a 503, not a 500.
            log.warning("database connection unavailable: %s", error)
            raise Unavailable("The database is busy or unreachable; retry shortly.") from None
        if read_only:
            await conn.execution_options(**{dialect.READ_ONLY: True})
        return conn

    async def dispose(self) -> None:
        await self.engine.dispose()


class Session:
    """One request's connection and transaction. Routes commit before they return, so a write
    is durable before its response leaves; closing without a commit rolls back."""

    def __init__(self, connection: AsyncConnection, autocommit: bool = False) -> None:
        self.connection = connection
        # Set while an idempotency key is claimed: the route's commit then waits for the edge,
        # which stores the response in the same transaction and commits both together.
        self.deferred = False
        # PostgreSQL requests start without a transaction (no BEGIN/ROLLBACK round trips for
        # the key lookup and for reads); a write calls begin_transaction() first.
        self.autocommit = autocommit

    async def begin_transaction(self) -> None:
        """From here on, statements share one transaction until commit."""
        if self.autocommit:
            await self.connection.commit()  # closes SQLAlchemy's bookkeeping; nothing is open
            await self.connection.execution_options(
                isolation_level=self.connection.default_isolation_level
            )
            self.autocommit = False

    async def commit(self) -> None:
        if not self.deferred:
            await self.connection.commit()

    async def commit_now(self) -> None:
        await self.connection.commit()

    async def rollback(self) -> None:
        await self.connection.rollback()

    @asynccontextmanager
    async def own_transactions(self) -> AsyncIterator[bool]:
        """Statements inside commit one by one, inside PostgreSQL (autocommit).

        For a write that takes a hot lock (the per-organization counter): with its own
        transaction the lock is released by the same round trip that took it, instead of
        waiting for the application to send COMMIT. Anything the request did before is
        committed first. Under an idempotency claim, and on SQLite (one writer at a time
        anyway), statements stay in the request's transaction. Yields whether they commit
        one by one."""
        if self.deferred or self.connection.dialect.name == "sqlite":
            yield False
            return
        if self.autocommit:
            yield True
            return
        await self.connection.commit()
        default = self.connection.default_isolation_level
        await self.connection.execution_options(isolation_level="AUTOCOMMIT")
        try:
            yield True
        except BaseException:
            await self.connection.rollback()  # ends SQLAlchemy's bookkeeping; nothing is open
            raise
        else:
            await self.connection.commit()
        finally:
            await self.connection.execution_options(isolation_level=default)

    async def close(self) -> None:
        await self.connection.close()


async def open_session(
    database: Database, *, read_only: bool, lazy_transaction: bool = False
) -> Session:
    """With `lazy_transaction`, a PostgreSQL session runs each statement on its own until
    `begin_transaction()`: reads need no transaction, and each round trip saved counts."""
    connection = await database.connect(read_only=read_only)
    if lazy_transaction and not database.is_sqlite:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        return Session(connection, autocommit=True)
    return Session(connection)
