"""The queries data set, written straight into a migrated database with asyncpg COPY
(`copy_records_to_table`), not through the API: 10 metrics of every kind, `customers`
customers `c1` … `c<n>` with a current value of each, and about 20 observations per customer
spread over 13 months (2024-10-01 to 2025-11-01), the latest of each (customer, metric) being
its current value. Then VACUUM ANALYZE.

The database is kept between runs: its COMMENT records the data set it holds once loading
finished, so a later run reuses it when the comment matches (`complete`) and loads it again
otherwise."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from customer_metrics.text import comparison_key

VERSION = 1  # bump when the generated rows change, so kept databases are loaded again
START = datetime(2024, 10, 1, tzinfo=UTC)
END = datetime(2025, 11, 1, tzinfo=UTC)  # 13 months of observations
SPAN_MS = int((END - START).total_seconds() * 1000)
SOURCE = "bench"
BATCH_CUSTOMERS = 5_000  # customers per COPY call
TIERS = ("free", "starter", "pro", "business", "enterprise")
TIER_SHARES = (0.40, 0.25, 0.20, 0.10, 0.05)
REGIONS = ("na", "emea", "apac", "latam")
REGION_SHARES = (0.45, 0.30, 0.20, 0.05)
VALUE_COLUMNS = (
    "value_number",
    "value_integer",
    "value_text",
    "value_boolean",
    "value_date",
    "value_datetime",
)
_COLUMN_INDEX = {
    "NUMBER": 0,
    "INTEGER": 1,
    "STRING": 2,
    "BOOLEAN": 3,
    "DATE": 4,
    "DATETIME": 5,
}
_OBS_COLUMNS = (
    "organization_id",
    "customer_ref",
    "metric_ref",
    "observed_at",
    "recorded_at",
    "source",
    *VALUE_COLUMNS,
)


@dataclass(frozen=True)
class MetricSpec:
    id: int
    key: str
    name: str
    data_type: str
    unit: str | None = None
    allowed_values: tuple[str, ...] | None = None
    # Observations per customer: drawn uniformly from [low, high].
    low: int = 1
    high: int = 1


METRICS = (
    MetricSpec(1, "arr", "ARR", "NUMBER", "USD", low=3, high=7),
    MetricSpec(2, "plan_tier", "Plan tier", "STRING", allowed_values=TIERS),
    MetricSpec(3, "seats", "Seats", "INTEGER", "seats"),
    MetricSpec(4, "nps", "NPS", "INTEGER"),
    MetricSpec(5, "health_score", "Health score", "NUMBER", "%", low=2, high=6),
    MetricSpec(6, "region", "Region", "STRING", allowed_values=REGIONS),
    MetricSpec(7, "churn_risk", "Churn risk", "BOOLEAN"),
    MetricSpec(8, "renewal_date", "Renewal date", "DATE"),
    MetricSpec(9, "last_login", "Last login", "DATETIME", low=2, high=6),
    MetricSpec(10, "active_users", "Active users", "INTEGER", "users"),
)
BY_KEY = {m.key: m for m in METRICS}
# ARR ranges by tier (USD); enterprise accounts have a long tail up to 2.5M.
_ARR = {"free": (0, 0), "starter": (1_000, 10_000), "pro": (10_000, 50_000)}
_ARR |= {"business": (40_000, 150_000), "enterprise": (80_000, 250_000)}
_SEATS = {"free": (1, 3), "starter": (3, 10), "pro": (10, 50), "business": (50, 200)}
_SEATS |= {"enterprise": (200, 5_000)}


@dataclass(frozen=True)
class DataSet:
    """What to load: the number of customers (10 metrics each, ~20 observations)."""

    customers: int = 1_000_000

    def spec(self) -> dict[str, Any]:
        """What a kept database must have been loaded with to be reused."""
        return {
            "version": VERSION,
            "customers": self.customers,
            "metrics": [m.key for m in METRICS],
            "start": START.isoformat(),
            "end": END.isoformat(),
        }


@dataclass(frozen=True)
class LoadTimes:
    """Seconds spent on each part of the load, and what was loaded."""

    customers: int
    observations: int
    current_values: int
    copy_s: float
    vacuum_analyze_s: float
    total_s: float
    database_mb: float


def _pick(rng: random.Random, items: tuple[str, ...], shares: tuple[float, ...]) -> str:
    roll = rng.random()
    for item, share in zip(items, shares, strict=True):
        if roll < share:
            return item
        roll -= share
    return items[-1]


def _money(value: float) -> Decimal:
    return Decimal(round(value * 100)).scaleb(-2)


def _stamps(rng: random.Random, count: int) -> list[datetime]:
    """`count` distinct instants (ms) in [START, END), oldest first."""
    draw = rng.random
    picks = sorted({int(draw() * SPAN_MS) for _ in range(count)})
    return [START + timedelta(milliseconds=ms) for ms in picks]


def _customer_values(rng: random.Random, stamps: dict[int, list[datetime]]) -> dict[int, list[Any]]:
    """One value per observation, per metric id, oldest first (the last one is current)."""
    tier = _pick(rng, TIERS, TIER_SHARES)
    low, high = _ARR[tier]
    arr = low + (high - low) * rng.random()
    if tier == "enterprise":
        arr *= 1 + 9 * rng.random() ** 3  # a long tail of large accounts
    seats = rng.randint(*_SEATS.get(tier, (1, 3)))
    health = 100 * rng.betavariate(5, 2)
    renewal = END.date() + timedelta(days=int(rng.random() * 365))
    values: dict[int, list[Any]] = {}
    n = len(stamps[1])
    # ARR grows towards its current value; health wanders around its own.
    values[1] = [_money(arr * (0.7 + 0.3 * (k + 1) / n)) for k in range(n)]
    values[2] = [tier]
    values[3] = [seats]
    values[4] = [rng.randint(0, 10)]
    values[5] = [
        Decimal(round(min(100.0, max(0.0, health + rng.uniform(-15, 15))) * 10)).scaleb(-1)
        for _ in stamps[5]
    ]
    values[6] = [_pick(rng, REGIONS, REGION_SHARES)]
    values[7] = [rng.random() < 0.1]
    values[8] = [renewal]
    values[9] = list(stamps[9])  # a login is observed when it happens
    values[10] = [rng.randint(1, seats)]
    return values


_Slot = Callable[[Any], tuple[Any, ...]]


def _slot(index: int) -> _Slot:
    before = (None,) * index
    after = (None,) * (len(VALUE_COLUMNS) - index - 1)
    return lambda value: (*before, value, *after)


_SLOTS = {m.id: _slot(_COLUMN_INDEX[m.data_type]) for m in METRICS}
_SECOND = timedelta(seconds=1)


def _batch(
    org: int, first: int, last: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Customers, observations and current values of customers first..last, in key order.
    The same customer always gets the same rows (seeded by its number)."""
    customers, observations, current = [], [], []
    for ref in range(first, last + 1):
        rng = random.Random(ref * 1_000_003 + VERSION)
        created = START - timedelta(days=int(rng.random() * 1_000))
        customers.append((org, ref, f"c{ref}", f"Customer {ref}", f"c{ref}@example.com", created))
        stamps = {m.id: _stamps(rng, rng.randint(m.low, m.high)) for m in METRICS}
        values = _customer_values(rng, stamps)
        for metric in METRICS:
            slot = _SLOTS[metric.id]
            for observed, value in zip(stamps[metric.id], values[metric.id], strict=True):
                row = (org, ref, metric.id, observed, observed + _SECOND, SOURCE, *slot(value))
                observations.append(row)
            current.append(row)
    return customers, observations, current


async def _setup(conn: asyncpg.Connection, org: int, customers: int) -> None:
    now = datetime.now(UTC)
    await conn.copy_records_to_table(
        "metrics",
        records=[
            (
                org,
                m.id,
                m.key,
                m.name,
                comparison_key(m.name),
                m.data_type,
                m.unit,
                json.dumps(list(m.allowed_values)) if m.allowed_values else None,
                False,
                now,
                now,
            )
            for m in METRICS
        ],
        columns=[
            "organization_id",
            "id",
            "key",
            "name",
            "name_key",
            "data_type",
            "unit",
            "allowed_values",
            "archived",
            "time_created",
            "time_updated",
        ],
    )
    # Later writes through the API number their metrics and customers after these.
    for name, value in (("metric", len(METRICS)), ("customer", customers)):
        await conn.execute(
            "INSERT INTO counters (organization_id, name, value) VALUES ($1, $2, $3) "
            "ON CONFLICT (organization_id, name) DO UPDATE SET value = EXCLUDED.value",
            org,
            name,
            value,
        )


_CUSTOMER_COLUMNS = ["organization_id", "id", "customer_id", "name", "email", "time_created"]


async def _copy_range(url: str, org: int, first: int, last: int) -> tuple[int, int]:
    """COPY customers first..last and their rows; returns (observations, current values)."""
    conn = await asyncpg.connect(url)
    counts = [0, 0]
    started = time.perf_counter()
    try:
        # The foreign keys exist (migrations made them); the rows are consistent by
        # construction, so their per-row checks are skipped during the load only.
        await conn.execute("SET session_replication_role = replica")
        async with conn.transaction():
            for start in range(first, last + 1, BATCH_CUSTOMERS):
                end = min(start + BATCH_CUSTOMERS - 1, last)
                customers, observations, current = _batch(org, start, end)
                await conn.copy_records_to_table(
                    "customers",
                    records=[(*c, c[-1]) for c in customers],
                    columns=[*_CUSTOMER_COLUMNS, "time_updated"],
                )
                await conn.copy_records_to_table(
                    "metric_values", records=observations, columns=_OBS_COLUMNS
                )
                await conn.copy_records_to_table(
                    "metric_current_values", records=current, columns=_OBS_COLUMNS
                )
                counts[0] += len(observations)
                counts[1] += len(current)
                if (end - first + 1) % (20 * BATCH_CUSTOMERS) == 0:
                    print(
                        f"[bench] queries data: customers {first:,}..{end:,} of {last:,}, "
                        f"{time.perf_counter() - started:.0f} s",
                        flush=True,
                    )
    finally:
        await conn.close()
    return counts[0], counts[1]


def _copy_range_in_process(url: str, org: int, first: int, last: int) -> tuple[int, int]:
    return asyncio.run(_copy_range(url, org, first, last))


def _rollup_statements() -> tuple[str, str]:
    """The series rollup's fill from the observations, as migration 0007 runs it."""
    versions = Path(__file__).parents[1] / "src/customer_metrics/storage/migrations/versions"
    path = versions / "2026_11_26_0007_series_rollups.py"
    spec = importlib.util.spec_from_file_location("series_rollups", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._ROWS, module._TOTALS


async def _finish(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        # The rows were copied past the service: its series rollup (migrated while the tables
        # were empty) is filled from them as the migration fills it for existing data.
        await conn.execute("TRUNCATE metric_rollup_rows, metric_rollups, metric_rollup_dirty")
        for statement in _rollup_statements():
            await conn.execute(statement)
        # VACUUM sets the visibility map as autovacuum would on a table at rest, so
        # index-only scans are index-only; ANALYZE gives the planner its statistics.
        tables = ("metric_values", "metric_current_values", "customers", "metric_rollups")
        for table in (*tables, "metric_rollup_rows"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        await conn.execute("ANALYZE")
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


async def _setup_in(url: str, org: int, customers: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await _setup(conn, org, customers)
    finally:
        await conn.close()


def load(url: str, org: int, data: DataSet, workers: int = 2) -> LoadTimes:
    """Load `data` for organization `org` into the migrated database at `url`: `workers`
    processes each build and COPY a share of the customers (building rows in Python is half
    the work, so one process per core keeps PostgreSQL busy)."""
    start = time.perf_counter()
    asyncio.run(_setup_in(url, org, data.customers))
    step = -(-data.customers // workers)
    ranges = [(1 + i * step, min((i + 1) * step, data.customers)) for i in range(workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_copy_range_in_process, url, org, a, b) for a, b in ranges]
        counts = [f.result() for f in futures]
    copied = time.perf_counter()
    size = asyncio.run(_finish(url))
    done = time.perf_counter()
    return LoadTimes(
        customers=data.customers,
        observations=sum(c[0] for c in counts),
        current_values=sum(c[1] for c in counts),
        copy_s=round(copied - start, 1),
        vacuum_analyze_s=round(done - copied, 1),
        total_s=round(done - start, 1),
        database_mb=round(size / 1e6, 1),
    )


# --- keeping the database -------------------------------------------------------------------


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _read_mark(admin_url: str, name: str) -> dict[str, Any] | None:
    conn = await asyncpg.connect(admin_url)
    try:
        text = await conn.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            name,
        )
    finally:
        await conn.close()
    try:
        mark = json.loads(text) if text else None
    except ValueError:
        return None
    return mark if isinstance(mark, dict) else None


def complete(admin_url: str, name: str, data: DataSet) -> dict[str, Any] | None:
    """The mark of database `name` when it holds exactly `data`, fully loaded; else None."""
    mark = asyncio.run(_read_mark(admin_url, name))
    if mark and mark.get("spec") == data.spec() and isinstance(mark.get("organization_id"), int):
        return mark
    return None


async def _write_mark(admin_url: str, name: str, mark: dict[str, Any]) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        literal = json.dumps(mark).replace("'", "''")
        await conn.execute(f"COMMENT ON DATABASE {_quoted(name)} IS '{literal}'")
    finally:
        await conn.close()


def mark_complete(admin_url: str, name: str, data: DataSet, org: int, times: LoadTimes) -> None:
    """Record that `name` holds `data` for organization `org` (written last: a load that
    stopped half way leaves no mark and is loaded again)."""
    mark = {"spec": data.spec(), "organization_id": org, "load": asdict(times)}
    asyncio.run(_write_mark(admin_url, name, mark))
