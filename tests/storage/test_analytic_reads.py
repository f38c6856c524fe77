"""Analytic reads run with their own settings on PostgreSQL (JIT off), set for the statement's
transaction only: the next statement, and the connection's next user, see the server's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, literal, select

from customer_metrics.storage import dialect
from customer_metrics.storage.database import Database, PostgresSession, open_session
from tests.conftest import Backend

JIT = select(func.current_setting("jit"))


@pytest.fixture
async def database(backend: Backend) -> AsyncIterator[Database]:
    if backend.name != "postgres":
        pytest.skip("settings are a PostgreSQL matter")
    database = Database(backend.database_url, pool_size=1)
    yield database
    await database.dispose()


async def _session(database: Database, *, lazy: bool) -> PostgresSession:
    session = await open_session(database, read_only=True, lazy_transaction=lazy)
    assert isinstance(session, PostgresSession)
    session.scope(1)  # under row-level security, transactions name a tenant
    return session


async def _server_jit(database: Database) -> str:
    session = await _session(database, lazy=True)
    try:
        return str((await session.connection.execute(JIT)).scalar_one())
    finally:
        await session.close()


async def test_an_analytic_read_runs_without_jit_and_leaves_no_setting_behind(database):
    server = await _server_jit(database)
    assert server == "on"  # PostgreSQL's default, so that "off" below is the read's own
    session = await _session(database, lazy=True)
    try:
        conn = session.native
        assert (await session.connection.execute(dialect.analytic(JIT))).scalar_one() == "off"
        assert (await session.connection.execute(JIT)).scalar_one() == server
        if not conn.row_security:  # a transaction opened only for the read ended with it
            assert not conn.in_transaction
    finally:
        await session.close()
    assert await _server_jit(database) == server


async def test_inside_a_transaction_the_settings_are_put_back_after_the_read(database):
    session = await _session(database, lazy=False)
    try:
        conn = session.native
        await session.connection.exec_driver_sql("SELECT 1")  # opens the transaction
        assert conn.in_transaction
        assert (await session.connection.execute(dialect.analytic(JIT))).scalar_one() == "off"
        assert conn.in_transaction
        assert (await session.connection.execute(JIT)).scalar_one() == "on"
    finally:
        await session.close()


async def test_a_failed_analytic_read_leaves_the_connection_usable(database):
    session = await _session(database, lazy=True)
    try:
        failing = dialect.analytic(select(literal(1) / literal(0)))
        with pytest.raises(Exception, match="division by zero"):
            await session.connection.execute(failing)
        assert (await session.connection.execute(JIT)).scalar_one() == "on"
    finally:
        await session.close()
