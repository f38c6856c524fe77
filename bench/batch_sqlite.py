"""The SQLite floor for batch_ingest (for scale: no target). The same rows as the service's
runs go through only the two writes contract §4 asks of every stored value: the observation
upsert and the current-value upsert. They are written with the standard library's sqlite3,
one connection, into a database the service itself migrated (its tables, keys and indexes),
with the service's pragmas but no foreign keys, no rollup marks, HTTP, JSON or validation."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from batch_load import CUSTOMERS, EPOCH, FLOOR_COLUMNS, ITEMS, LoadResult
from harness import BenchError, run_command, venv_bin

_COLUMNS = ", ".join(FLOOR_COLUMNS)  # metric_values' value columns, as the COPY floor's
_SET = "recorded_at = excluded.recorded_at, source = excluded.source, "
_SET += "value_number = excluded.value_number"
OBSERVATIONS = f"""INSERT INTO metric_values ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (organization_id, customer_ref, metric_ref, observed_at) DO UPDATE SET {_SET}"""
CURRENT = f"""INSERT INTO metric_current_values ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (organization_id, customer_ref, metric_ref) DO UPDATE SET
    observed_at = excluded.observed_at, {_SET}
WHERE metric_current_values.observed_at <= excluded.observed_at"""
PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=OFF")

Row = tuple[Any, ...]


def migrated_database(env: dict[str, str], work: Path) -> Path:
    """`customer-metrics migrate` on the embedded database of `env`'s CM_DATA_DIR: its path."""
    run_command([venv_bin("customer-metrics"), "migrate"], env, work)
    found = sorted(Path(env["CM_DATA_DIR"]).glob("*.db"))
    if len(found) != 1:
        raise BenchError(f"expected one migrated database in {env['CM_DATA_DIR']}: {found}")
    return found[0]


def _stored_time(moment: datetime) -> str:
    # As the service stores timestamps in SQLite (storage/dialect.py `_sqlite_time`).
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def floor_rows(batches: int, first_ms: int) -> list[tuple[list[Row], list[Row]]]:
    """The rows of `batch_load.batch_bodies(…, batches, first_ms)` as the service stores them
    (customer b-<k> is ref k + 1, as the warm-up batch creates them): per batch, the
    observations and each customer's newest row of the batch (its current value)."""
    recorded = _stored_time(datetime.now(UTC))
    out = []
    for b in range(batches):
        rows: list[Row] = []
        newest: dict[int, Row] = {}
        for i in range(ITEMS):
            n = b * ITEMS + i
            observed = _stored_time(EPOCH + timedelta(milliseconds=first_ms + n))
            row = (1, n % CUSTOMERS + 1, 1, observed, recorded, None, f"{n % 99991}.{n % 100:02d}")
            rows.append(row)
            newest[row[1]] = row  # rows of a customer come in observed_at order
        out.append((rows, [newest[c] for c in sorted(newest)]))
    return out


def write_batches(database: Path, batches: list[tuple[list[Row], list[Row]]]) -> LoadResult:
    """Each batch in its own write transaction (`BEGIN IMMEDIATE` … `COMMIT`), in order."""
    conn = sqlite3.connect(database, isolation_level=None)
    latencies: list[float] = []
    try:
        for pragma in PRAGMAS:
            conn.execute(pragma)
        start = time.perf_counter()
        for rows, current in batches:
            began = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(OBSERVATIONS, rows)
            conn.executemany(CURRENT, current)
            conn.execute("COMMIT")
            latencies.append(time.perf_counter() - began)
        seconds = time.perf_counter() - start
    finally:
        conn.close()
    latencies.sort()
    return LoadResult(
        batches=len(batches),
        values=sum(len(rows) for rows, _ in batches),
        seconds=seconds,
        statuses={"upsert": len(batches)},
        batch_p50_ms=latencies[len(latencies) // 2] * 1000,
        batch_max_ms=latencies[-1] * 1000,
    )
