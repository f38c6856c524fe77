"""Benchmark batch writes, `POST /external/v1/customers/metrics/values` with 10,000-item
batches from 4 concurrent clients, in values/s: on PostgreSQL against a COPY floor (asyncpg
`copy_records_to_table`, 4 connections), and on SQLite (service only). Also the server's
peak RSS (VmHWM) after one ≈10 MiB batch. Targets: ratio ≥ 0.50, SQLite ≥ 50,000 values/s,
peak RSS ≤ 250 MB. For scale, not for a target: an upsert floor, the same records through
only the SQL the contract asks of each stored value (batch_load.UPSERT_SQL)."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import batch_load as load
import batch_sqlite
from batch_report import SideRuns, render
from harness import (
    RESULTS_DIR,
    BenchError,
    Options,
    backend_pids,
    environment_facts,
    log,
    recreate_database,
    vacuum,
)
from machine import busy_cpu_seconds, cpu_busy, cpu_count, process_group_pids
from report import Check, Outcome, write_json
from services import BATCH_PATH, Service, create_metric, peak_rss_mb, service_env, start_service

NAME = "batch_ingest"
DATABASE = "cm_bench"
BATCHES = 30  # per service run: 300,000 values
FLOOR_BATCHES = 80  # per floor run: 800,000 values (COPY is fast; a run should last > 1 s)
RATIO_TARGET = 0.50
SQLITE_TARGET = 50_000.0
RSS_TARGET_MB = 250.0
WINDOW_MS = 10**9  # each run writes its own ≈11-day window of observed_at


def _measured(
    ours: Callable[[], list[int]], write: Callable[[], load.LoadResult]
) -> load.LoadResult:
    """One run of `write`, with how busy the machine was before it (others' load) and the
    CPU seconds the whole machine spent during it."""
    busy = cpu_busy(0.5, ours)
    before = busy_cpu_seconds()
    result = write()
    after = busy_cpu_seconds()
    result.busy_before = None if busy is None else round(busy, 3)
    if before is not None and after is not None:
        result.cpu_seconds = round(after - before, 2)
    return result


def _measure_rss(service: Service, metric: str) -> dict[str, Any]:
    """VmHWM of the fresh server before and after one ≈10 MiB batch of long STRING values."""
    body = load.big_body(metric)
    before = peak_rss_mb(service.pid)
    url = service.base_url + BATCH_PATH
    result = load.post_batches(url, service.headers, [body], 600)
    if result.statuses != {"200": 1} or result.rejected:
        raise BenchError(f"the 10 MiB batch was not stored: {result}")
    after = peak_rss_mb(service.pid)
    log(f"peak RSS {before:.1f} MB → {after:.1f} MB after a {len(body) / 2**20:.2f} MiB batch")
    return {
        "body_bytes": len(body),
        "items": load.ITEMS,
        "vm_hwm_before_mb": round(before, 1),
        "vm_hwm_after_mb": round(after, 1),
        "batch_seconds": round(result.seconds, 2),
    }


def _service_run(
    service: Service,
    metric: str,
    options: Options,
    ours: Callable[[], list[int]],
    run: int,
    batches: int = BATCHES,
) -> load.LoadResult:
    """One timed run (run 0: the warm-up, one batch): bodies are serialized first."""
    bodies = load.batch_bodies(metric, batches, run * WINDOW_MS)
    url = service.base_url + BATCH_PATH
    return _measured(
        ours, lambda: load.post_batches(url, service.headers, bodies, options.duration * 3)
    )


def _postgres(options: Options, work: Path) -> tuple[SideRuns, SideRuns, SideRuns, dict[str, Any]]:
    url = recreate_database(options.pg_url, DATABASE)
    load.create_floor_table(url)
    floor = SideRuns("floor", "asyncpg copy_records_to_table into bench_copy_floor, 4 conns")
    upsert = SideRuns(
        "upsert floor",
        "observation upsert + current-value upsert only (batch_load.UPSERT_SQL), 4 conns",
    )
    svc = SideRuns("service", f"serve --workers 1 on PostgreSQL, POST {BATCH_PATH}, 4 clients")
    with ExitStack() as stack:
        service = start_service(stack, "service-pg", service_env(options, work, url), work, NAME)
        metric = create_metric(service, "ARR", "NUMBER")
        rss = _measure_rss(service, create_metric(service, "Notes", "STRING"))

        def ours() -> list[int]:
            return process_group_pids([service.pid]) + backend_pids(url) + [os.getpid()]

        log("warm-up: one batch each")
        load.copy_batches(url, load.floor_records(1, 0), 600)
        load.upsert_batches(url, load.floor_records(1, 0), 600)
        _service_run(service, metric, options, ours, 0, batches=1)
        for i in range(1, options.runs + 1):
            records = load.floor_records(FLOOR_BATCHES, i * WINDOW_MS)
            vacuum(url)  # both sides' tables, before each pair of runs
            deadline = options.duration * 3
            floor.runs.append(_measured(ours, partial(load.copy_batches, url, records, deadline)))
            upsert.runs.append(
                _measured(ours, partial(load.upsert_batches, url, records[:BATCHES], deadline))
            )
            del records
            svc.runs.append(_service_run(service, metric, options, ours, i))
            log(
                f"run {i}/{options.runs}: floor {floor.runs[-1].values_per_s:,.0f} values/s, "
                f"upsert floor {upsert.runs[-1].values_per_s:,.0f} values/s, "
                f"service {svc.runs[-1].values_per_s:,.0f} values/s"
            )
    return floor, upsert, svc, rss


def _sqlite(options: Options, work: Path) -> tuple[SideRuns, SideRuns, dict[str, Any]]:
    floor = SideRuns(
        "sqlite floor",
        "observation upsert + current-value upsert only (batch_sqlite), sqlite3, 1 conn",
    )
    side = SideRuns("sqlite", f"serve --workers 1 on SQLite, POST {BATCH_PATH}, 4 clients")
    floor_db = batch_sqlite.migrated_database(
        service_env(options, work / "sqlite-floor", None), work
    )
    with ExitStack() as stack:
        env = service_env(options, work / "sqlite", None)
        service = start_service(stack, "service-sqlite", env, work, NAME)
        metric = create_metric(service, "ARR", "NUMBER")
        rss = _measure_rss(service, create_metric(service, "Notes", "STRING"))

        def ours() -> list[int]:
            return [*process_group_pids([service.pid]), os.getpid()]

        # The floor's warm-up batch: the same history as the service's warm-up leaves.
        batch_sqlite.write_batches(floor_db, batch_sqlite.floor_rows(1, 0))
        _service_run(service, metric, options, ours, 0, batches=1)
        for i in range(1, options.runs + 1):
            rows = batch_sqlite.floor_rows(BATCHES, i * WINDOW_MS)
            floor.runs.append(_measured(ours, partial(batch_sqlite.write_batches, floor_db, rows)))
            del rows
            side.runs.append(_service_run(service, metric, options, ours, i))
            log(
                f"run {i}/{options.runs}: sqlite floor {floor.runs[-1].values_per_s:,.0f} "
                f"values/s, sqlite {side.runs[-1].values_per_s:,.0f} values/s"
            )
    return floor, side, rss


def _cpu_budget(floor_values_per_s: float) -> float | None:
    """The machine's CPU µs a value can cost, all processes together, at the ratio target."""
    if not floor_values_per_s:
        return None
    return cpu_count() / (RATIO_TARGET * floor_values_per_s) * 1e6


def run(options: Options) -> Outcome:
    log(f"{NAME}: recreating database {DATABASE}")
    facts = environment_facts(options.pg_url)
    with TemporaryDirectory(prefix="cm-bench-") as tmp:
        floor, upsert, service, pg_rss = _postgres(options, Path(tmp))
        sqlite_floor, sqlite, sqlite_rss = _sqlite(options, Path(tmp))
    ratio = service.median / floor.median if floor.median else 0.0
    rss = max(pg_rss["vm_hwm_after_mb"], sqlite_rss["vm_hwm_after_mb"])
    checks = [
        Check("ratio (PostgreSQL values/s, service / COPY floor)", ratio, RATIO_TARGET, True),
        Check("SQLite values/s", sqlite.median, SQLITE_TARGET, True),
        Check("peak RSS MB after a 10 MiB batch (max of both)", rss, RSS_TARGET_MB, False),
    ]
    sides = [floor, upsert, service, sqlite_floor, sqlite]
    upsert_ratio = upsert.median / floor.median if floor.median else 0.0
    service_share = service.median / upsert.median if upsert.median else 0.0
    sqlite_share = sqlite.median / sqlite_floor.median if sqlite_floor.median else 0.0
    context = [
        f"for scale: median(upsert floor) / median(floor) = {upsert_ratio:.3f}, "
        f"median(service) / median(upsert floor) = {service_share:.3f}",
        f"for scale: median(sqlite floor) = {sqlite_floor.median:,.0f} values/s, "
        f"median(sqlite) / median(sqlite floor) = {sqlite_share:.3f}",
    ]
    budget = _cpu_budget(floor.median)
    if budget is not None:
        context.append(
            f"CPU budget at the ratio target: {cpu_count()} CPUs / ({RATIO_TARGET} * "
            f"median(floor) values/s) = {budget:.1f} µs a value for everything; median machine "
            "CPU µs a value (cpu µs/v): "
            + ", ".join(f"{s.name} {s.cpu_us_per_value or 0:.1f}" for s in (floor, upsert, service))
        )
    errors = sum(s.errors for s in sides)
    passed = all(c.holds for c in checks) and errors == 0
    rss_both = {"postgres": pg_rss, "sqlite": sqlite_rss}
    text = render(NAME, sides, ratio, rss_both, checks, context)
    data = {
        "benchmark": NAME,
        "options": {**asdict(options), "service_env": dict(options.service_env)},
        "environment": facts,
        "batches_per_run": BATCHES,
        "items_per_batch": load.ITEMS,
        "clients": load.CLIENTS,
        "sides": {s.name: s.summary() for s in sides},
        "ratio": round(ratio, 4),
        "upsert_floor_ratio": round(upsert_ratio, 4),
        "service_to_upsert_floor": round(service_share, 4),
        "sqlite_to_sqlite_floor": round(sqlite_share, 4),
        "cpu_budget_us_per_value": None if budget is None else round(budget, 2),
        "rss": {"postgres": pg_rss, "sqlite": sqlite_rss},
        "targets": [{**asdict(c), "holds": c.holds} for c in checks],
        "passed": passed,
    }
    write_json(RESULTS_DIR / f"{NAME}.json", data)
    return Outcome(text, data, passed)
