"""Benchmark the support agent's view, `GET /external/v1/customers/{customer_id}/metrics`
(every non-archived metric's current value for one customer, in one query), over data sets
loaded with COPY (bench/agent_data.py): 50 NUMBER metrics, 2 observations per customer and
metric, a small and a large set. Targets: p99 ≤ 10 ms at 16 connections on each set, and
p99(large) ≤ 1.5 x p99(small): the view's cost must not grow with history.

For scale, a floor runs interleaved with the service on each set: bench/floor_server.py
answering GET /view/{customer_id} with the service's own statement (no key, no framework
beyond Starlette). It has no target; it shows what this machine allows."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import asyncpg

from agent_data import METRICS, DataSet, LoadTimes, load
from agent_plan import explain, view_sql, view_sql_with_parameter
from harness import (
    LUA_DIR,
    RESULTS_DIR,
    BenchError,
    Options,
    WrkResult,
    backend_pids,
    environment_facts,
    log,
    recreate_database,
    run_wrk,
)
from machine import process_group_pids
from report import Check, Outcome, Side, side_table, write_json
from services import Service, service_env, start_floor, start_service

NAME = "agent_view"
DATABASE = "cm_bench_agent"
SCRIPT = LUA_DIR / "agent_view.lua"
CONNECTIONS = 16
P99_TARGET_MS = 10.0
GROWTH_TARGET = 1.5
# Customers per set (x 50 metrics x 2 observations): 1M and 10M observations.
DEFAULT_CUSTOMERS = (10_000, 100_000)
PATH = "/external/v1/customers/{customer_id}/metrics"


@dataclass(frozen=True)
class SetResult:
    """One data set: its size, how long loading took, the wrk runs and the view's plan."""

    data: DataSet
    times: LoadTimes
    runs: list[WrkResult]
    floor_runs: list[WrkResult]
    plan: list[str]

    @property
    def label(self) -> str:
        return f"{self.data.observations / 1e6:g}M observations"

    def side(self) -> Side:
        description = (
            f"{self.data.customers:,} customers x {METRICS} metrics, "
            f"{self.data.observations:,} observations, "
            f"{self.data.current_values:,} current values; load {self.times.total_s:.0f} s"
        )
        return Side(self.label, description, self.runs)

    def floor(self) -> Side:
        description = "bare Starlette + asyncpg, the service's statement, no key"
        return Side(f"floor, {self.label}", description, self.floor_runs)


def _sizes() -> list[int]:
    """Customers per set; BENCH_AGENT_CUSTOMERS="2000,20000" overrides (for a quick check)."""
    raw = os.environ.get("BENCH_AGENT_CUSTOMERS")
    return [int(v) for v in raw.split(",")] if raw else list(DEFAULT_CUSTOMERS)


async def _org_id(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT id FROM organizations WHERE name = 'bench'"))
    finally:
        await conn.close()


async def _drop(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await conn.close()


def _smoke(service: Service, customer_id: str) -> None:
    request = urllib.request.Request(service.base_url + PATH.format(customer_id=customer_id))
    for key, value in service.headers.items():
        request.add_header(key, value)
    with urllib.request.urlopen(request, timeout=10) as response:
        status, body = response.status, json.loads(response.read())
    if status != 200 or len(body.get("data", [])) != METRICS:
        raise BenchError(f"smoke GET {customer_id} answered {status}: {str(body)[:300]}")


def _measure(options: Options, data: DataSet) -> SetResult:
    log(f"{NAME}: {data.customers:,} customers, {data.observations:,} observations")
    url = recreate_database(options.pg_url, DATABASE)
    with TemporaryDirectory(prefix="cm-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        service = start_service(stack, "service", service_env(options, work, url), work, NAME)
        org = asyncio.run(_org_id(url))
        times = load(url, org, data)
        log(f"loaded in {times.total_s:.1f} s ({times.database_mb:,.0f} MB): {times}")
        _smoke(service, f"c{data.customers}")
        sql_file = work / "view.sql"
        sql_file.write_text(view_sql_with_parameter(org))
        floor = start_floor(stack, url, work, NAME, ["--view-sql", str(sql_file)])

        def ours() -> list[int]:
            return process_group_pids([service.pid, floor.process.pid]) + backend_pids(url)

        def wrk(side: tuple[str, str, Any, str], duration: int, check: bool) -> WrkResult:
            _, base_url, headers, path = side
            return run_wrk(
                base_url,
                SCRIPT,
                options=options,
                duration=duration,
                headers=headers,
                script_args=[str(data.customers), path],
                ours=ours if check else None,
            )

        sides = [
            ("floor", floor.base_url, {}, "/view/c"),
            ("service", service.base_url, service.headers, ""),
        ]
        if options.warmup:
            for side in sides:
                wrk(side, options.warmup, check=False)
        runs: dict[str, list[WrkResult]] = {"floor": [], "service": []}
        for i in range(1, options.runs + 1):
            for side in sides:  # interleaved, as the other benchmarks
                name = side[0]
                result = wrk(side, options.duration, check=True)
                log(
                    f"run {i}/{options.runs} {name}: {result.requests_per_s:.0f} req/s, "
                    f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                    f"non-2xx {result.non_2xx}"
                )
                runs[name].append(result)
        plan = explain(url, view_sql(org, f"c{data.customers // 2}"))
    return SetResult(data, times, runs["service"], runs["floor"], plan)


def _checks(sets: list[SetResult]) -> list[Check]:
    checks = [
        Check(f"p99 ms, {s.label}", s.side().median_p99_ms, P99_TARGET_MS, at_least=False)
        for s in sets
    ]
    small, large = sets[0].side(), sets[-1].side()
    growth = large.median_p99_ms / small.median_p99_ms if small.median_p99_ms else 0.0
    label = f"p99({sets[-1].label}) / p99({sets[0].label})"
    checks.append(Check(label, growth, GROWTH_TARGET, at_least=False))
    return checks


def _render(sets: list[SetResult], checks: list[Check]) -> str:
    parts = [f"== {NAME}: GET {PATH}, {CONNECTIONS} connections =="]
    for s in sets:
        parts += [side_table(s.floor()), side_table(s.side())]
    parts.append("\n".join(c.line() for c in checks))
    parts.append(f"plan ({sets[-1].label}):\n" + "\n".join(sets[-1].plan))
    errors = sum(s.side().non_2xx + s.side().socket_errors for s in sets)
    if errors:
        parts.append(f"ERRORS: {errors} non-2xx responses or socket errors")
    return "\n\n".join(parts)


def run(options: Options) -> Outcome:
    options = replace(options, connections=CONNECTIONS)
    facts = environment_facts(options.pg_url)
    try:
        sets = [_measure(options, DataSet(customers)) for customers in _sizes()]
    finally:
        asyncio.run(_drop(options.pg_url))
    checks = _checks(sets)
    errors = sum(s.side().non_2xx + s.side().socket_errors for s in sets)
    passed = all(c.holds for c in checks) and errors == 0
    data: dict[str, Any] = {
        "benchmark": NAME,
        "options": {**asdict(options), "service_env": dict(options.service_env)},
        "environment": facts,
        "sets": [
            {
                "customers": s.data.customers,
                "metrics": METRICS,
                "observations": s.data.observations,
                "current_values": s.data.current_values,
                "load": asdict(s.times),
                "result": s.side().summary(),
                "floor": s.floor().summary(),
                "plan": s.plan,
            }
            for s in sets
        ],
        "targets": [{**asdict(c), "holds": c.holds} for c in checks],
        "passed": passed,
    }
    write_json(RESULTS_DIR / f"{NAME}.json", data)
    return Outcome(_render(sets, checks), data, passed)
