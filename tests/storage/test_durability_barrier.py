"""The durability barrier (PostgreSQL): transactions committed with `synchronous_commit` off
are on disk once `wait()` returns, however many requests wait at once, and a barrier whose
connection breaks tells its callers to flush on their own, then recovers."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from customer_metrics.storage.database import DurabilityBarrier
from customer_metrics.storage.dialect import async_url, native_dsn
from customer_metrics.storage.native import FLUSH_WAL
from tests.conftest import Backend


@pytest.fixture
async def dsn(backend: Backend) -> str:
    if backend.name != "postgres":
        pytest.skip("an embedded SQLite file commits to disk before answering; no barrier")
    return native_dsn(async_url(backend.owner_url or backend.database_url))


async def commit_without_waiting(dsn: str) -> int:
    """Commits a transaction that takes an id with synchronous_commit off; returns the WAL
    position right after its commit record."""
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    try:
        async with conn.transaction():
            await conn.fetchval("SELECT pg_current_xact_id()")
        return int(await conn.fetchval("SELECT pg_current_wal_insert_lsn()"))
    finally:
        await conn.close()


async def flushed_past(dsn: str, lsn: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT pg_current_wal_flush_lsn()")) >= lsn
    finally:
        await conn.close()


async def test_commits_made_before_waiting_are_on_disk_when_it_returns(dsn: str) -> None:
    barrier = DurabilityBarrier(dsn)
    try:
        for _ in range(5):
            positions = await asyncio.gather(*(commit_without_waiting(dsn) for _ in range(4)))
            waited = await asyncio.gather(*(barrier.wait() for _ in range(20)))
            assert waited == [True] * 20
            # Checked at once: PostgreSQL's own WAL writer flushes asynchronous commits only
            # every wal_writer_delay (200 ms).
            assert all([await flushed_past(dsn, lsn) for lsn in positions])
    finally:
        await barrier.close()


async def test_a_broken_barrier_connection_sends_callers_to_flush_alone_then_recovers(
    dsn: str,
) -> None:
    barrier = DurabilityBarrier(dsn)
    admin = await asyncpg.connect(dsn)
    try:
        assert await barrier.wait()
        assert barrier._connection is not None
        pid = barrier._connection.get_server_pid()
        await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)
        outcomes = [await barrier.wait() for _ in range(3)]
        # The first wait after the break may fail (its caller flushes on its own
        # connection); the barrier reconnects for the next.
        assert outcomes[1:] == [True, True]
        lsn = await commit_without_waiting(dsn)
        assert await barrier.wait()
        assert await flushed_past(dsn, lsn)
    finally:
        await admin.close()
        await barrier.close()


async def test_the_flush_waits_for_the_disk_even_where_commits_default_to_not_waiting(
    dsn: str,
) -> None:
    """A request that flushes on its own connection (the barrier failed) gets a durable
    commit even if an operator set `synchronous_commit = off` for the service's role; the
    setting is the flush's alone and does not stay on the connection."""
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    try:
        for _ in range(5):
            lsn = await commit_without_waiting(dsn)
            await conn.execute(FLUSH_WAL)
            assert await flushed_past(dsn, lsn)
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
    finally:
        await conn.close()
