"""Load for batch_ingest: pre-serialized 10,000-item batch bodies sent by concurrent httpx
clients, the COPY floor's record batches copied by concurrent asyncpg connections, the
upsert floor's (the same records through the least SQL the contract asks of a batch), and
the ≈10 MiB batch used to read the server's peak RSS."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx

from customer_metrics.values.typed import VALUE_COLUMNS

ITEMS = 10_000
CUSTOMERS = 10_000
CLIENTS = 4
EPOCH = datetime(2021, 1, 1, tzinfo=UTC)
MAX_BODY = 10 * 1024 * 1024
FLOOR_TABLE = "bench_copy_floor"
FLOOR_COLUMNS = (
    "organization_id",
    "customer_ref",
    "metric_ref",
    "observed_at",
    "recorded_at",
    "source",
    "value_number",
)
FLOOR_DDL = f"""
CREATE TABLE IF NOT EXISTS {FLOOR_TABLE} (
    organization_id bigint NOT NULL,
    customer_ref bigint NOT NULL,
    metric_ref bigint NOT NULL,
    observed_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    source text,
    value_number numeric,
    PRIMARY KEY (organization_id, customer_ref, metric_ref, observed_at)
)"""

# The upsert floor: the two writes contract §4 asks of every stored value, with nothing else
# (no HTTP, JSON, validation, foreign keys or rollup marks). Its tables copy the service's
# metric_values and metric_current_values: the same keys and indexes (the six partial
# indexes that searches sort and filter current values by, one per value type), and, like
# the service's statement, the observations are upserted (a retried batch replaces, never
# doubles) while each customer's newest row of the batch moves its current value forward.
UPSERT_TABLE = "bench_upsert_values"
UPSERT_CURRENT = "bench_upsert_current"
UPSERT_DDL = [
    FLOOR_DDL.replace(FLOOR_TABLE, UPSERT_TABLE),
    f"CREATE INDEX IF NOT EXISTS {UPSERT_TABLE}_by_metric_time ON {UPSERT_TABLE} "
    "(organization_id, metric_ref, observed_at) INCLUDE (value_number)",
    f"""CREATE TABLE IF NOT EXISTS {UPSERT_CURRENT} (
    organization_id bigint NOT NULL,
    customer_ref bigint NOT NULL,
    metric_ref bigint NOT NULL,
    observed_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    source text,
    value_number numeric,
    value_integer bigint,
    value_text text COLLATE "C",
    value_boolean boolean,
    value_date date,
    value_datetime timestamptz,
    PRIMARY KEY (organization_id, customer_ref, metric_ref)
)""",
    f"CREATE INDEX IF NOT EXISTS {UPSERT_CURRENT}_by_metric ON {UPSERT_CURRENT} "
    "(organization_id, metric_ref, customer_ref) INCLUDE (value_number, value_integer)",
    *(
        f"CREATE INDEX IF NOT EXISTS {UPSERT_CURRENT}_by_{c} ON {UPSERT_CURRENT} "
        f"(organization_id, metric_ref, {c}, customer_ref) WHERE {c} IS NOT NULL"
        for c in VALUE_COLUMNS
    ),
]
UPSERT_SQL = f"""
WITH batch AS (
    SELECT c AS customer_ref, o AS observed_at, s AS source, v AS value_number
    FROM unnest($3::bigint[], $4::timestamptz[], $5::text[], $6::numeric[]) AS r(c, o, s, v)
), moved AS (
    INSERT INTO {UPSERT_CURRENT} AS cur
        (organization_id, customer_ref, metric_ref, observed_at, recorded_at, source,
         value_number)
    SELECT DISTINCT ON (customer_ref) $1, customer_ref, $2, observed_at, $7, source,
        value_number
    FROM batch ORDER BY customer_ref, observed_at DESC
    ON CONFLICT (organization_id, customer_ref, metric_ref) DO UPDATE SET
        observed_at = excluded.observed_at, recorded_at = excluded.recorded_at,
        source = excluded.source, value_number = excluded.value_number
    WHERE cur.observed_at <= excluded.observed_at
)
INSERT INTO {UPSERT_TABLE} AS obs
    (organization_id, customer_ref, metric_ref, observed_at, recorded_at, source,
     value_number)
SELECT $1, customer_ref, $2, observed_at, $7, source, value_number FROM batch
ON CONFLICT (organization_id, customer_ref, metric_ref, observed_at) DO UPDATE SET
    recorded_at = excluded.recorded_at, source = excluded.source,
    value_number = excluded.value_number"""


@dataclass
class LoadResult:
    """One timed run: values stored per second and what went wrong."""

    batches: int
    values: int
    seconds: float
    statuses: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    batch_p50_ms: float = 0.0
    batch_max_ms: float = 0.0
    busy_before: float | None = None
    # CPU seconds the whole machine spent over the run (every process, clients included).
    cpu_seconds: float | None = None

    @property
    def values_per_s(self) -> float:
        return self.values / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_value(self) -> float | None:
        if self.cpu_seconds is None or not self.values:
            return None
        return self.cpu_seconds / self.values * 1e6


def _stamp(ms: int) -> str:
    moment = EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def batch_bodies(metric: str, batches: int, first_ms: int) -> list[bytes]:
    """`batches` JSON bodies of ITEMS NUMBER values; item n observed at EPOCH + first_ms + n ms
    (unique in the run), for customer b-<n mod CUSTOMERS>."""
    bodies = []
    for b in range(batches):
        items = []
        for i in range(ITEMS):
            n = b * ITEMS + i
            items.append(
                f'{{"customer_id":"b-{n % CUSTOMERS:05d}","metric":"{metric}",'
                f'"value":{n % 99991}.{n % 100:02d},"observed_at":"{_stamp(first_ms + n)}"}}'
            )
        bodies.append(('{"values":[' + ",".join(items) + "]}").encode())
    return bodies


def floor_records(batches: int, first_ms: int) -> list[list[tuple[Any, ...]]]:
    """The same rows as `batch_bodies`, as records for `copy_records_to_table`."""
    recorded = datetime.now(UTC)
    decimals = [Decimal(f"{v}.{v % 100:02d}") for v in range(1000)]  # shared: less memory
    out = []
    for b in range(batches):
        rows = []
        for i in range(ITEMS):
            n = b * ITEMS + i
            observed = EPOCH + timedelta(milliseconds=first_ms + n)
            rows.append((1, n % CUSTOMERS + 1, 1, observed, recorded, None, decimals[n % 1000]))
        out.append(rows)
    return out


def big_body(metric: str, source_len: int = 100) -> bytes:
    """One ITEMS-item batch of STRING values as long as fits in the 10 MiB body limit (with
    1 KiB to spare): the largest batch the service accepts."""
    source = "s" * source_len

    def item(i: int, length: int) -> str:
        return (
            f'{{"customer_id":"b-{i % CUSTOMERS:05d}","metric":"{metric}",'
            f'"value":"{"v" * length}","observed_at":"{_stamp(i)}","source":"{source}"}}'
        )

    overhead = len('{"values":[]}') + ITEMS - 1 + sum(len(item(i, 0)) for i in range(ITEMS))
    length = min(1000, (MAX_BODY - 1024 - overhead) // ITEMS)
    return ('{"values":[' + ",".join(item(i, length) for i in range(ITEMS)) + "]}").encode()


async def _post_all(
    url: str, headers: dict[str, str], bodies: Sequence[bytes], deadline_s: float
) -> LoadResult:
    queue = list(reversed(bodies))
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    accepted = rejected = 0
    start = time.perf_counter()
    stop_at = start + deadline_s
    timeout = httpx.Timeout(300.0)
    send_headers = {**headers, "Content-Type": "application/json"}

    async def client() -> None:
        nonlocal accepted, rejected
        async with httpx.AsyncClient(timeout=timeout) as http:
            while queue and time.perf_counter() < stop_at:
                body = queue.pop()
                sent = time.perf_counter()
                response = await http.post(url, content=body, headers=send_headers)
                latencies.append(time.perf_counter() - sent)
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    answer = response.json()
                    accepted += int(answer["accepted"])
                    rejected += int(answer["rejected"])

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    seconds = time.perf_counter() - start
    latencies.sort()
    return LoadResult(
        batches=len(latencies),
        values=accepted,
        seconds=seconds,
        statuses=dict(statuses),
        rejected=rejected,
        batch_p50_ms=latencies[len(latencies) // 2] * 1000 if latencies else 0.0,
        batch_max_ms=latencies[-1] * 1000 if latencies else 0.0,
    )


def post_batches(
    url: str, headers: dict[str, str], bodies: Sequence[bytes], deadline_s: float
) -> LoadResult:
    """Send `bodies` from CLIENTS concurrent clients until all are sent or `deadline_s` has
    passed (no new batch starts after it); values = the sum of `accepted`."""
    return asyncio.run(_post_all(url, headers, bodies, deadline_s))


Write = Callable[[asyncpg.Connection, list[tuple[Any, ...]]], Awaitable[object]]


async def _copy(conn: asyncpg.Connection, records: list[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table(FLOOR_TABLE, records=records, columns=FLOOR_COLUMNS)


async def _upsert(conn: asyncpg.Connection, records: list[tuple[Any, ...]]) -> None:
    """One batch of floor records (all of one organization and metric) through UPSERT_SQL."""
    first = records[0]
    await conn.execute(
        UPSERT_SQL,
        first[0],
        first[2],
        [r[1] for r in records],
        [r[3] for r in records],
        [r[5] for r in records],
        [r[6] for r in records],
        first[4],
    )


async def _write_all(
    database_url: str,
    batches: Sequence[list[tuple[Any, ...]]],
    deadline_s: float,
    write: Write,
    label: str,
) -> LoadResult:
    queue = list(reversed(batches))
    connections = [await asyncpg.connect(database_url) for _ in range(CLIENTS)]
    latencies: list[float] = []
    values = 0
    try:
        start = time.perf_counter()
        stop_at = start + deadline_s

        async def writer(conn: asyncpg.Connection) -> None:
            nonlocal values
            while queue and time.perf_counter() < stop_at:
                records = queue.pop()
                sent = time.perf_counter()
                await write(conn, records)
                latencies.append(time.perf_counter() - sent)
                values += len(records)

        await asyncio.gather(*(writer(c) for c in connections))
        seconds = time.perf_counter() - start
    finally:
        for conn in connections:
            await conn.close()
    latencies.sort()
    return LoadResult(
        batches=len(latencies),
        values=values,
        seconds=seconds,
        statuses={label: len(latencies)},
        batch_p50_ms=latencies[len(latencies) // 2] * 1000 if latencies else 0.0,
        batch_max_ms=latencies[-1] * 1000 if latencies else 0.0,
    )


def copy_batches(
    database_url: str, batches: Sequence[list[tuple[Any, ...]]], deadline_s: float
) -> LoadResult:
    """COPY `batches` into FLOOR_TABLE over CLIENTS concurrent connections."""
    return asyncio.run(_write_all(database_url, batches, deadline_s, _copy, "copy"))


def upsert_batches(
    database_url: str, batches: Sequence[list[tuple[Any, ...]]], deadline_s: float
) -> LoadResult:
    """Write `batches` through UPSERT_SQL over CLIENTS concurrent connections, in order
    (so every batch moves the current values forward, as the service's runs do)."""
    return asyncio.run(_write_all(database_url, batches, deadline_s, _upsert, "upsert"))


async def _create_floor_table(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for statement in (FLOOR_DDL, *UPSERT_DDL):
            await conn.execute(statement)
    finally:
        await conn.close()


def create_floor_table(database_url: str) -> None:
    asyncio.run(_create_floor_table(database_url))
