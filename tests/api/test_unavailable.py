"""When no database connection can be had, clients get 503 `unavailable` (retryable), never
a 500."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx
import pytest

from customer_metrics.main import create_app
from customer_metrics.settings import Settings
from customer_metrics.storage import dialect, migrate
from tests.builders import create_org
from tests.conftest import api_client, make_settings

UNKNOWN_KEY = "cm_" + "A" * 40


async def test_unreachable_database_is_503_with_retry_after(tmp_path):
    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere", data_dir=tmp_path, secret_key="s"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get(
                "/external/v1/customers/metrics", headers={"Authorization": f"Bearer {UNKNOWN_KEY}"}
            )
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert response.headers["retry-after"] == "1"
    assert ready.status_code == 503
    assert alive.status_code == 200


async def test_a_lost_database_connection_is_503_then_recovers(backend, app, client):
    """Backends killed under the pool (as a PostgreSQL restart does): the requests that meet a
    dead pooled connection get a retryable 503, never a 500, and the service recovers."""
    import asyncpg

    from tests.conftest import PG_ADMIN_URL

    if backend.name != "postgres":
        pytest.skip("an embedded SQLite file has no server connection to lose")
    assert (await client.get("/customers/metrics")).status_code == 200
    database = backend.database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await admin.close()
    statuses = [(await client.get("/customers/metrics")).status_code for _ in range(30)]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[-1] == 200


async def test_a_connection_that_died_while_checked_out_is_released_quietly(backend, app):
    """PostgreSQL ends the backend of a request's connection and asyncpg notices (and hands
    the connection back to its pool) before the request ends: the statement is a lost
    connection, and closing the session raises nothing."""
    import asyncio

    import asyncpg
    from sqlalchemy import select
    from sqlalchemy.exc import DBAPIError

    from customer_metrics.storage.database import open_session
    from tests.conftest import PG_ADMIN_URL

    if backend.name != "postgres":
        pytest.skip("an embedded SQLite file has no server connection to lose")
    session = await open_session(app.state.database, read_only=True, lazy_transaction=True)
    pid = await session.native.raw.fetchval("SELECT pg_backend_pid()")
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    await asyncio.sleep(0.5)  # asyncpg sees the socket close, and detaches the connection
    with pytest.raises(DBAPIError) as lost:
        await session.connection.execute(select(1))
    assert lost.value.connection_invalidated
    await session.close()


async def test_a_write_that_waits_out_sqlites_busy_timeout_is_503(tmp_path, monkeypatch):
    """Another process holds SQLite's write lock longer than the busy timeout: the write is
    refused as retryable (503), and goes through once the lock is free."""
    monkeypatch.setattr(dialect, "SQLITE_BUSY_MS", 200)
    settings = make_settings(tmp_path)
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        org = await create_org(app)
        async with api_client(app, org.api_key) as client:
            metric = {"name": "ARR", "data_type": "NUMBER"}
            holder = sqlite3.connect(tmp_path / "customer-metrics.db", isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                refused = await client.post("/customers/metrics", json=metric)
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            created = await client.post("/customers/metrics", json=metric)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "unavailable"
    assert refused.headers["retry-after"] == "1"
    assert created.status_code == 201, created.text
