"""Benchmark the queries of contract §5 on a large data set (bench/queries_data.py: 1M
customers x 10 metrics, ~20M observations over 13 months, COPY-loaded once and kept):
segment search (first page, and a 10-page cursor walk), the summary of a NUMBER metric, and
12-month daily series of one customer and of all customers.

Requests go one at a time (httpx, one connection), so each latency is one request's own;
each case runs `--runs` times for `--duration` s (at least MIN_REQUESTS requests), and the
targets hold the median of the runs' p50 latencies. Afterwards the SQL each request ran is
shown under EXPLAIN (ANALYZE, BUFFERS) (bench/queries_plan.py)."""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from harness import (
    RESULTS_DIR,
    BenchError,
    Options,
    backend_pids,
    environment_facts,
    log,
)
from machine import cpu_busy, process_group_pids
from queries_data import DataSet
from queries_db import DATABASE, Prepared, prepare
from queries_plan import Plan, explain_request
from report import NOISY, Check, Outcome, write_json
from services import Service, service_env, start_service

NAME = "queries"
SEARCH = "/external/v1/customers/search"
SUMMARY = "/external/v1/customers/metrics/{ref}/summary"
SERIES = "/external/v1/customers/metrics/{ref}/series"
PAGES = 10
MIN_REQUESTS = 5
MAX_REQUESTS = 500
SEARCH_TARGET_MS = 150.0
SUMMARY_TARGET_MS = 300.0
ONE_SERIES_TARGET_MS = 20.0
ALL_SERIES_TARGET_MS = 1000.0
# Later pages may cost no more than the first; the slack only absorbs timing noise.
WALK_RATIO_TARGET = 1.2
YEAR = {"from": "2024-11-01T00:00:00Z", "to": "2025-11-01T00:00:00Z", "interval": "day"}
ENTERPRISE_OVER_100K = {
    "and": [
        {"metric": "plan_tier", "op": "eq", "value": "enterprise"},
        {"metric": "arr", "op": "gt", "value": 100000},
    ]
}


@dataclass(frozen=True)
class Case:
    """One request shape to time; `request(rng)` gives (method, path, params, json body)."""

    name: str
    description: str
    target_ms: float
    request: Callable[[random.Random], tuple[str, str, dict[str, str] | None, Any]]


@dataclass(frozen=True)
class Run:
    """One timed run of a case: latency percentiles (ms) over its requests."""

    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]
    busy_before: float | None


@dataclass(frozen=True)
class WalkRun:
    """One run of cursor walks: every walk's latency (ms) per page, page 1 first."""

    walks: int
    page_ms: list[list[float]]
    statuses: dict[str, int]
    busy_before: float | None

    def page_p50(self, page: int) -> float:
        return statistics.median(self.page_ms[page])


@dataclass
class CaseResult:
    case: Case
    runs: list[Run] = field(default_factory=list)

    @property
    def median_p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(n for r in self.runs for s, n in r.statuses.items() if s != "200")


@dataclass
class WalkResult:
    name: str
    body: dict[str, Any]
    runs: list[WalkRun] = field(default_factory=list)

    def page_p50(self, page: int) -> float:
        """Median over the runs of page `page`'s p50 (0-based)."""
        return statistics.median(r.page_p50(page) for r in self.runs)

    @property
    def ratio(self) -> float:
        """Mean p50 of pages 2..10 over page 1's p50."""
        later = [self.page_p50(p) for p in range(1, PAGES)]
        first = self.page_p50(0)
        return statistics.fmean(later) / first if first else 0.0

    @property
    def worst_ratio(self) -> float:
        first = self.page_p50(0)
        return max(self.page_p50(p) for p in range(1, PAGES)) / first if first else 0.0

    @property
    def errors(self) -> int:
        return sum(n for r in self.runs for s, n in r.statuses.items() if s != "200")


def _percentile(values: list[float], share: float) -> float:
    """Linear interpolation between the nearest ranks."""
    ordered = sorted(values)
    h = (len(ordered) - 1) * share
    low = int(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (h - low)


def _search_body(sort: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "filter": ENTERPRISE_OVER_100K,
        "sort": sort,
        "include": ["arr", "plan_tier", "health_score"],
        "limit": 50,
    }


SEARCH_BY_ARR = _search_body([{"metric": "arr", "direction": "desc"}])
SEARCH_BY_HEALTH = _search_body([{"metric": "health_score", "direction": "asc"}])


def _cases(customers: int) -> list[Case]:
    def customer(rng: random.Random) -> str:
        return f"c{rng.randint(1, customers)}"

    def series(agg: str, one: bool) -> Callable[[random.Random], Any]:
        def request(rng: random.Random) -> Any:
            params = {**YEAR, "agg": agg}
            if one:
                params["customer_id"] = customer(rng)
            return "GET", SERIES.format(ref="arr"), params, None

        return request

    return [
        Case(
            "search_arr",
            "search plan_tier = enterprise AND arr > 100000, sort arr desc, limit 50",
            SEARCH_TARGET_MS,
            lambda rng: ("POST", SEARCH, None, SEARCH_BY_ARR),
        ),
        Case(
            "search_health",
            "search plan_tier = enterprise AND arr > 100000, sort health_score asc, limit 50",
            SEARCH_TARGET_MS,
            lambda rng: ("POST", SEARCH, None, SEARCH_BY_HEALTH),
        ),
        Case(
            "summary_arr",
            "summary of arr (NUMBER), current values",
            SUMMARY_TARGET_MS,
            lambda rng: ("GET", SUMMARY.format(ref="arr"), None, None),
        ),
        Case(
            "series_one_sum",
            "series arr, 365 daily buckets, agg=sum, one random customer",
            ONE_SERIES_TARGET_MS,
            series("sum", one=True),
        ),
        Case(
            "series_one_snapshot",
            "series arr, 365 daily buckets, agg=snapshot_sum, one random customer",
            ONE_SERIES_TARGET_MS,
            series("snapshot_sum", one=True),
        ),
        Case(
            "series_all_sum",
            "series arr, 365 daily buckets, agg=sum, all customers",
            ALL_SERIES_TARGET_MS,
            series("sum", one=False),
        ),
        Case(
            "series_all_snapshot",
            "series arr, 365 daily buckets, agg=snapshot_sum, all customers",
            ALL_SERIES_TARGET_MS,
            series("snapshot_sum", one=False),
        ),
    ]


def _selected(cases: list[Case]) -> list[Case]:
    """BENCH_QUERIES_CASES="search_arr,summary_arr" runs only those (and walks only for the
    searches named)."""
    raw = os.environ.get("BENCH_QUERIES_CASES")
    if not raw:
        return cases
    wanted = set(raw.split(","))
    return [c for c in cases if c.name in wanted]


class _Client:
    """One keep-alive connection to the service; times each request."""

    def __init__(self, service: Service) -> None:
        self._http = httpx.Client(base_url=service.base_url, headers=service.headers, timeout=120)

    def close(self) -> None:
        self._http.close()

    def timed(
        self, method: str, path: str, params: dict[str, str] | None, body: Any
    ) -> tuple[float, int, Any]:
        start = time.perf_counter()
        response = self._http.request(method, path, params=params, json=body)
        payload = response.json() if response.status_code == 200 else None
        return (time.perf_counter() - start) * 1000, response.status_code, payload


def _run_case(
    client: _Client, case: Case, duration: float, rng: random.Random, ours: Callable[[], Any]
) -> Run:
    busy = cpu_busy(0.5, ours)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    deadline = time.perf_counter() + duration
    while len(latencies) < MIN_REQUESTS or (
        time.perf_counter() < deadline and len(latencies) < MAX_REQUESTS
    ):
        ms, status, _ = client.timed(*case.request(rng))
        latencies.append(ms)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return Run(
        requests=len(latencies),
        p50_ms=round(_percentile(latencies, 0.5), 2),
        p90_ms=round(_percentile(latencies, 0.9), 2),
        p99_ms=round(_percentile(latencies, 0.99), 2),
        max_ms=round(max(latencies), 2),
        statuses=statuses,
        busy_before=None if busy is None else round(busy, 3),
    )


def _walk(client: _Client, body: dict[str, Any]) -> tuple[list[float], dict[str, int], Any]:
    """One 10-page walk; (latency per page, statuses, the last page's cursor body)."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    request = dict(body)
    last_body = request
    seen: set[str] = set()
    for _ in range(PAGES):
        last_body = dict(request)
        ms, status, payload = client.timed("POST", SEARCH, None, request)
        latencies.append(ms)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if payload is None or not payload.get("next_cursor"):
            raise BenchError(f"walk stopped at page {len(latencies)}: {status} {payload}")
        ids = {hit["customer_id"] for hit in payload["data"]}
        if ids & seen:
            raise BenchError(f"page {len(latencies)} repeats customers of earlier pages")
        seen |= ids
        request = {**body, "cursor": payload["next_cursor"]}
    return latencies, statuses, last_body


def _run_walks(
    client: _Client, body: dict[str, Any], duration: float, ours: Callable[[], Any]
) -> tuple[WalkRun, Any]:
    busy = cpu_busy(0.5, ours)
    pages: list[list[float]] = [[] for _ in range(PAGES)]
    statuses: dict[str, int] = {}
    deadline = time.perf_counter() + duration
    walks = 0
    last_body = body
    while walks < 3 or time.perf_counter() < deadline:
        latencies, seen, last_body = _walk(client, body)
        for page, ms in enumerate(latencies):
            pages[page].append(ms)
        for status, n in seen.items():
            statuses[status] = statuses.get(status, 0) + n
        walks += 1
    return WalkRun(walks, pages, statuses, None if busy is None else round(busy, 3)), last_body


# --- report ---------------------------------------------------------------------------------


def _busy(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" + ("!" if value > NOISY else "")


def _case_table(result: CaseResult) -> str:
    case = result.case
    lines = [
        f"{case.name}: {case.description}",
        f"{'run':>6} {'requests':>8} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'max ms':>9} "
        f"{'busy':>5}  statuses",
    ]
    for i, r in enumerate(result.runs, 1):
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(r.statuses.items()))
        lines.append(
            f"{i:>6} {r.requests:>8} {r.p50_ms:>9.1f} {r.p90_ms:>9.1f} {r.p99_ms:>9.1f} "
            f"{r.max_ms:>9.1f} {_busy(r.busy_before):>5}  {statuses}"
        )
    med = statistics.median
    lines.append(
        f"{'median':>6} {'':>8} {result.median_p50_ms:>9.1f} "
        f"{med(r.p90_ms for r in result.runs):>9.1f} {med(r.p99_ms for r in result.runs):>9.1f}"
    )
    return "\n".join(lines)


def _walk_table(result: WalkResult) -> str:
    header = f"{'run':>6} {'walks':>5} " + " ".join(f"{'p' + str(p + 1):>7}" for p in range(PAGES))
    lines = [
        f"walk_{result.name}: {PAGES} pages by cursor, p50 ms per page",
        header + f" {'busy':>5}",
    ]
    for i, r in enumerate(result.runs, 1):
        cells = " ".join(f"{r.page_p50(p):>7.1f}" for p in range(PAGES))
        lines.append(f"{i:>6} {r.walks:>5} {cells} {_busy(r.busy_before):>5}")
    cells = " ".join(f"{result.page_p50(p):>7.1f}" for p in range(PAGES))
    lines.append(f"{'median':>6} {'':>5} {cells}")
    lines.append(
        f"mean(p50 pages 2-{PAGES}) / p50 page 1 = {result.ratio:.2f}; "
        f"worst page / page 1 = {result.worst_ratio:.2f}"
    )
    return "\n".join(lines)


def _plans_text(plans: dict[str, list[Plan]]) -> str:
    parts = []
    for name, found in plans.items():
        for i, plan in enumerate(found, 1):
            parts.append(f"-- {name} statement {i}:\n{plan.sql}\n" + "\n".join(plan.lines))
    return "\n\n".join(parts)


def _checks(cases: list[CaseResult], walks: list[WalkResult]) -> list[Check]:
    checks = [
        Check(f"{c.case.name} p50 ms", c.median_p50_ms, c.case.target_ms, at_least=False)
        for c in cases
    ]
    checks += [
        Check(
            f"walk_{w.name}: mean p50 of pages 2-{PAGES} / page 1",
            w.ratio,
            WALK_RATIO_TARGET,
            at_least=False,
        )
        for w in walks
    ]
    return checks


# --- run ------------------------------------------------------------------------------------


def _data() -> DataSet:
    """BENCH_QUERIES_CUSTOMERS=20000 loads a smaller set (its own kept database contents)."""
    raw = os.environ.get("BENCH_QUERIES_CUSTOMERS")
    return DataSet(int(raw)) if raw else DataSet()


def _measure(
    options: Options, service: Service, prepared: Prepared, data: DataSet, work: Path
) -> tuple[list[CaseResult], list[WalkResult], dict[str, list[Plan]]]:
    def ours() -> list[int]:
        return process_group_pids([service.pid]) + backend_pids(prepared.url)

    rng = random.Random(7)
    client = _Client(service)
    cases = [CaseResult(c) for c in _selected(_cases(data.customers))]
    names = {c.case.name for c in cases}
    walks = [
        WalkResult(name, body)
        for name, body in (("search_arr", SEARCH_BY_ARR), ("search_health", SEARCH_BY_HEALTH))
        if name in names
    ]
    last_pages: dict[str, Any] = {}
    try:
        for result in cases:  # warm-up: one unmeasured request each
            client.timed(*result.case.request(rng))
        for i in range(1, options.runs + 1):
            for result in cases:
                result.runs.append(_run_case(client, result.case, options.duration, rng, ours))
                log(f"run {i}/{options.runs} {result.case.name}: p50 {result.runs[-1].p50_ms} ms")
            for walk in walks:
                run, last_pages[walk.name] = _run_walks(client, walk.body, options.duration, ours)
                walk.runs.append(run)
                log(
                    f"run {i}/{options.runs} walk_{walk.name}: page 1 {run.page_p50(0):.1f} ms, "
                    f"page {PAGES} {run.page_p50(PAGES - 1):.1f} ms"
                )
    finally:
        client.close()
    plans = _plans(service, prepared, cases, last_pages, work, rng)
    return cases, walks, plans


def _plans(
    service: Service,
    prepared: Prepared,
    cases: list[CaseResult],
    last_pages: dict[str, Any],
    work: Path,
    rng: random.Random,
) -> dict[str, list[Plan]]:
    data_dir = Path(service.env["CM_DATA_DIR"])
    plans: dict[str, list[Plan]] = {}
    for result in cases:
        method, path, params, body = result.case.request(rng)
        plans[result.case.name] = explain_request(
            prepared.url, data_dir, service.headers, method, path, params=params, json=body
        )
    for name, body in last_pages.items():
        plans[f"walk_{name} page {PAGES}"] = explain_request(
            prepared.url, data_dir, service.headers, "POST", SEARCH, json=body
        )
    return plans


def run(options: Options) -> Outcome:
    facts = environment_facts(options.pg_url)
    data = _data()
    with TemporaryDirectory(prefix="cm-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        env = service_env(options, work, None)
        prepared = prepare(options, data, env, work)
        env["CM_DATABASE_URL"] = prepared.url
        service = start_service(stack, "service", env, work, NAME, org=prepared.organization_id)
        cases, walks, plans = _measure(options, service, prepared, data, work)
    checks = _checks(cases, walks)
    errors = sum(c.errors for c in cases) + sum(w.errors for w in walks)
    passed = all(c.holds for c in checks) and errors == 0
    title = (
        f"== {NAME}: {data.customers:,} customers x 10 metrics, "
        f"{prepared.load.get('observations', 0):,} observations "
        f"({'kept' if prepared.reused else 'loaded now'}, database {DATABASE}); "
        "one request at a time =="
    )
    parts = [title, *(_case_table(c) for c in cases), *(_walk_table(w) for w in walks)]
    parts.append("\n".join(c.line() for c in checks))
    noisy = sum(1 for c in cases for r in c.runs if (r.busy_before or 0) > NOISY)
    if noisy:
        parts.append(f"NOISE: {noisy} run(s) marked ! started on a machine already busy.")
    if errors:
        parts.append(f"ERRORS: {errors} responses other than 200")
    parts.append("plans:\n" + _plans_text(plans))
    result: dict[str, Any] = {
        "benchmark": NAME,
        "options": {**asdict(options), "service_env": dict(options.service_env)},
        "environment": facts,
        "data": {"spec": data.spec(), "reused": prepared.reused, "load": prepared.load},
        "cases": [
            {
                "name": c.case.name,
                "description": c.case.description,
                "target_ms": c.case.target_ms,
                "runs": [asdict(r) for r in c.runs],
                "median_p50_ms": c.median_p50_ms,
            }
            for c in cases
        ],
        "walks": [
            {
                "name": w.name,
                "runs": [
                    {"walks": r.walks, "page_p50_ms": [r.page_p50(p) for p in range(PAGES)]}
                    for r in w.runs
                ],
                "page_p50_ms": [w.page_p50(p) for p in range(PAGES)],
                "ratio": w.ratio,
                "worst_ratio": w.worst_ratio,
            }
            for w in walks
        ],
        "plans": {
            name: [{"sql": p.sql, "plan": p.lines} for p in found] for name, found in plans.items()
        },
        "targets": [{**asdict(c), "holds": c.holds} for c in checks],
        "passed": passed,
    }
    write_json(RESULTS_DIR / f"{NAME}.json", result)
    return Outcome("\n\n".join(parts), result, passed)
