"""The queries benchmark's database: made, migrated and loaded once (bench/queries_data.py),
then kept between runs; each run migrates it (so new migrations apply) and reuses it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    BenchError,
    Options,
    database_url,
    log,
    recreate_database,
    run_command,
    venv_bin,
)
from queries_data import DataSet, complete, load, mark_complete

DATABASE = "cm_bench_queries"


@dataclass(frozen=True)
class Prepared:
    """A loaded database: its URL, the bench organization, and how it was loaded."""

    url: str
    organization_id: int
    reused: bool
    load: dict[str, Any]


def prepare(options: Options, data: DataSet, env: dict[str, str], work: Path) -> Prepared:
    """Reuse the kept database when it holds `data` (and `--regenerate` was not given);
    otherwise make it again: migrate, `org create bench --json`, COPY, VACUUM ANALYZE."""
    cli = venv_bin("customer-metrics")
    url = database_url(options.pg_url, DATABASE)
    env = {**env, "CM_DATABASE_URL": url}
    mark = None if options.regenerate else complete(options.pg_url, DATABASE, data)
    if mark is not None:
        log(f"reusing {DATABASE} ({data.customers:,} customers; --regenerate loads it again)")
        try:
            run_command([cli, "migrate"], env, work)
        except BenchError as error:  # e.g. made by a newer schema than this checkout's
            log(f"cannot migrate the kept database, loading it again: {error}")
        else:
            return Prepared(url, int(mark["organization_id"]), True, dict(mark.get("load", {})))
    log(f"making {DATABASE}: {data.customers:,} customers (takes minutes)")
    recreate_database(options.pg_url, DATABASE)
    run_command([cli, "migrate"], env, work)
    org = int(
        json.loads(run_command([cli, "org", "create", "bench", "--json"], env, work))[
            "organization_id"
        ]
    )
    times = load(url, org, data)
    log(f"loaded in {times.total_s:.0f} s ({times.database_mb:,.0f} MB): {times}")
    mark_complete(options.pg_url, DATABASE, data, org, times)
    return Prepared(url, org, False, dict(vars(times)))
