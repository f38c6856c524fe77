"""PostgreSQL renders some answers' JSON itself (storage/dialect.py): the pieces write what the
service's Python renderers write."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import BigInteger, Date, literal, select

from customer_metrics.clock import format_timestamp
from customer_metrics.metrics.refs import format_metric_id
from customer_metrics.storage import dialect
from customer_metrics.storage.database import Database, PostgresSession, open_session
from customer_metrics.storage.types import UTCDateTime
from tests.conftest import Backend


@pytest.fixture
async def session(backend: Backend) -> AsyncIterator[PostgresSession]:
    if backend.name != "postgres":
        pytest.skip("only PostgreSQL renders JSON itself")
    database = Database(backend.database_url, pool_size=1)
    session = await open_session(database, read_only=True, lazy_transaction=True)
    assert isinstance(session, PostgresSession)
    session.scope(1)
    yield session
    await session.close()
    await database.dispose()


@pytest.mark.parametrize("number", [1, 7, 42, 999, 1000, 123456789012])
async def test_metric_numbers_are_padded_to_three_digits_and_never_cut(session, number):
    padded = literal("METRIC-") + dialect.zero_padded(literal(number, BigInteger()), 3)
    rendered = (await session.connection.execute(select(padded))).scalar_one()
    assert rendered == format_metric_id(number)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),  # asyncpg sends it as -infinity
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 2, 29, 12, 0, 0, 999, tzinfo=UTC),
    ],
)
async def test_timestamps_read_as_the_api_writes_them(session, moment):
    text = dialect.utc_text(literal(moment, UTCDateTime()))
    assert (await session.connection.execute(select(text))).scalar_one() == format_timestamp(moment)


@pytest.mark.parametrize(
    "day", [date(1, 1, 1), date(1, 1, 2), date(2024, 2, 29), date(9999, 12, 31)]
)
async def test_dates_read_as_the_api_writes_them(session, day):
    # asyncpg sends date.min and date.max as -infinity and infinity
    text = dialect.date_text(literal(day, Date()))
    assert (await session.connection.execute(select(text))).scalar_one() == day.isoformat()
