"""The agent_view data set, written straight into a migrated database with asyncpg COPY
(`copy_records_to_table`), not through the API: 50 NUMBER metrics, `customers` customers
`c1` … `c<n>`, `per_pair` observations per (customer, metric) in metric_values, and the latest
one per (customer, metric) in metric_current_values. Then ANALYZE."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

METRICS = 50
BATCH_CUSTOMERS = 2_000  # customers per COPY call (x 50 x per_pair observation rows)
SOURCE = "bench"
BASE = datetime(2022, 1, 1, tzinfo=UTC)
_VALUES = [Decimal(n).scaleb(-2) for n in range(100_003, 200_003, 7)]  # a cycled pool
_OBS_COLUMNS = (
    "organization_id",
    "customer_ref",
    "metric_ref",
    "observed_at",
    "recorded_at",
    "source",
    "value_number",
)


@dataclass(frozen=True)
class DataSet:
    """How much to load, and what loading it took."""

    customers: int
    per_pair: int = 2

    @property
    def observations(self) -> int:
        return self.customers * METRICS * self.per_pair

    @property
    def current_values(self) -> int:
        return self.customers * METRICS


@dataclass(frozen=True)
class LoadTimes:
    """Seconds spent on each part of the load."""

    observations_s: float
    current_s: float
    analyze_s: float
    total_s: float
    database_mb: float


def _rows(
    org: int, first: int, last: int, per_pair: int, latest_only: bool
) -> Iterator[tuple[object, ...]]:
    """Rows in primary-key order for customers first..last (inclusive)."""
    stamps = [BASE + timedelta(days=30 * k) for k in range(per_pair)]
    recorded = [s + timedelta(seconds=5) for s in stamps]
    picks = range(per_pair - 1, per_pair) if latest_only else range(per_pair)
    pool = len(_VALUES)
    for customer in range(first, last + 1):
        for metric in range(1, METRICS + 1):
            for k in picks:
                value = _VALUES[(customer * 31 + metric * 17 + k) % pool]
                yield (org, customer, metric, stamps[k], recorded[k], SOURCE, value)


async def _setup(conn: asyncpg.Connection, org: int, customers: int) -> None:
    now = datetime.now(UTC)
    metrics = [
        (org, i, f"m{i}", f"Metric {i}", f"metric {i}", "NUMBER", False, now, now)
        for i in range(1, METRICS + 1)
    ]
    await conn.copy_records_to_table(
        "metrics",
        records=metrics,
        columns=[
            "organization_id",
            "id",
            "key",
            "name",
            "name_key",
            "data_type",
            "archived",
            "time_created",
            "time_updated",
        ],
    )
    await conn.execute(
        "INSERT INTO counters (organization_id, name, value) VALUES ($1, 'metric', $2) "
        "ON CONFLICT (organization_id, name) DO UPDATE SET value = EXCLUDED.value",
        org,
        METRICS,
    )
    await conn.copy_records_to_table(
        "customers",
        records=((org, i, f"c{i}", now, now) for i in range(1, customers + 1)),
        columns=["organization_id", "id", "customer_id", "time_created", "time_updated"],
    )
    await conn.execute(
        "INSERT INTO counters (organization_id, name, value) VALUES ($1, 'customer', $2) "
        "ON CONFLICT (organization_id, name) DO UPDATE SET value = EXCLUDED.value",
        org,
        customers,
    )


async def _copy(
    conn: asyncpg.Connection, table: str, org: int, data: DataSet, latest_only: bool
) -> None:
    for first in range(1, data.customers + 1, BATCH_CUSTOMERS):
        last = min(first + BATCH_CUSTOMERS - 1, data.customers)
        rows = _rows(org, first, last, data.per_pair, latest_only)
        await conn.copy_records_to_table(table, records=rows, columns=_OBS_COLUMNS)


async def _load(url: str, org: int, data: DataSet) -> LoadTimes:
    conn = await asyncpg.connect(url)
    try:
        # The foreign keys exist (migrations made them); the rows are consistent by
        # construction, so their per-row checks are skipped during the load only.
        await conn.execute("SET session_replication_role = replica")
        start = time.perf_counter()
        async with conn.transaction():
            await _setup(conn, org, data.customers)
        async with conn.transaction():
            await _copy(conn, "metric_values", org, data, latest_only=False)
        observed = time.perf_counter()
        async with conn.transaction():
            await _copy(conn, "metric_current_values", org, data, latest_only=True)
        current = time.perf_counter()
        await conn.execute("RESET session_replication_role")
        await conn.execute("ANALYZE")
        done = time.perf_counter()
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    return LoadTimes(
        observations_s=round(observed - start, 2),
        current_s=round(current - observed, 2),
        analyze_s=round(done - current, 2),
        total_s=round(done - start, 2),
        database_mb=round(int(size) / 1e6, 1),
    )


def load(url: str, org: int, data: DataSet) -> LoadTimes:
    """Load `data` for organization `org` into the migrated database at `url`."""
    return asyncio.run(_load(url, org, data))
