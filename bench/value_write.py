"""Benchmark single value writes, `POST /external/v1/customers/{id}/metrics/{ref}/values`
(a NUMBER metric, 1,000 existing customers, a unique observed_at on every request), against
the metric_create floor (one INSERT … RETURNING per request), on PostgreSQL, with
interleaved wrk runs. Target: ratio ≥ 0.35."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from harness import (
    LUA_DIR,
    RESULTS_DIR,
    BenchError,
    Options,
    WrkResult,
    backend_pids,
    environment_facts,
    log,
    post_json,
    recreate_database,
    run_wrk,
    vacuum,
)
from machine import process_group_pids
from report import Check, Outcome, Side, render, write_json
from services import (
    FLOOR_DESCRIPTION,
    Service,
    create_metric,
    post_batch,
    service_env,
    start_floor,
    start_service,
)

NAME = "value_write"
DATABASE = "cm_bench"
SCRIPT = LUA_DIR / "value_write.lua"
CUSTOMERS = 1000
RATIO_TARGET = 0.35
BASE_MS = 1_609_459_200_000  # 2021-01-01T00:00:00Z; each run gets its own day-sized window
RUN_SPAN_MS = 86_400_000 * 2  # > thread count * 10^7 ms for up to 17 wrk threads
PATH = "/external/v1/customers/{customer_id}/metrics/{ref}/values"
SERVICE_DESCRIPTION = f"customer-metrics serve --workers 1, POST {PATH}"


@dataclass(frozen=True)
class Target:
    """One side's load target: the URL wrk hits, its headers and the script's mode."""

    name: str
    description: str
    url: str
    headers: Mapping[str, str]
    mode: str


def _load(
    target: Target,
    options: Options,
    duration: int,
    ref: str,
    window: int,
    ours: Callable[[], list[int]] | None = None,
) -> WrkResult:
    base = BASE_MS + window * RUN_SPAN_MS
    return run_wrk(
        target.url,
        SCRIPT,
        options=options,
        duration=duration,
        headers={"Content-Type": "application/json", **target.headers},
        script_args=[target.mode, ref, str(CUSTOMERS), str(base)],
        ours=ours,
    )


def _precreate_customers(service: Service, ref: str) -> None:
    """One batch giving every bench customer a first value (in 2020), so the measured writes
    go to existing customers with a current value."""
    items: list[dict[str, object]] = [
        {
            "customer_id": f"bench-{i:05d}",
            "metric": ref,
            "value": 0,
            "observed_at": "2020-01-01T00:00:00Z",
        }
        for i in range(CUSTOMERS)
    ]
    if post_batch(service, items) != CUSTOMERS:
        raise BenchError("pre-creating the customers did not accept every item")


def _smoke(target: Target, ref: str) -> None:
    body: dict[str, object] = {"value": 1.5, "observed_at": "2020-06-01T00:00:00.000Z"}
    url = target.url
    if target.mode == "floor":
        body.update(name=f"smoke {secrets.token_hex(4)}", data_type="NUMBER")
    else:
        url += PATH.format(customer_id="bench-00000", ref=ref)
    status, answer = post_json(url, body, target.headers)
    if status != 201:
        raise BenchError(f"{target.name}: smoke POST answered {status}, not 201: {answer}")


def _start(
    stack: ExitStack, options: Options, work: Path, url: str
) -> tuple[list[Target], str, Callable[[], list[int]]]:
    env = service_env(options, work, url)
    service = start_service(stack, "service", env, work, NAME)
    floor = start_floor(stack, url, work, NAME)
    ref = create_metric(service, "ARR", "NUMBER")
    _precreate_customers(service, ref)
    targets = [
        Target("floor", FLOOR_DESCRIPTION, floor.base_url + "/floor", {}, "floor"),
        Target("service", SERVICE_DESCRIPTION, service.base_url, service.headers, "service"),
    ]

    def ours() -> list[int]:
        return process_group_pids([floor.process.pid, service.pid]) + backend_pids(url)

    return targets, ref, ours


def run(options: Options) -> Outcome:
    log(f"{NAME}: recreating database {DATABASE}")
    url = recreate_database(options.pg_url, DATABASE)
    facts = environment_facts(options.pg_url)
    results: dict[str, list[WrkResult]] = {}
    with TemporaryDirectory(prefix="cm-bench-") as tmp, ExitStack() as stack:
        targets, ref, ours = _start(stack, options, Path(tmp), url)
        for target in targets:
            _smoke(target, ref)
            results[target.name] = []
            if options.warmup:
                log(f"warm-up {target.name} {options.warmup}s")
                _load(target, options, options.warmup, ref, 0)
        for i in range(1, options.runs + 1):
            vacuum(url)  # both sides' tables, before each pair of runs (see harness.vacuum)
            for target in targets:  # interleaved, so drift and noise hit both sides
                result = _load(target, options, options.duration, ref, i, ours)
                log(
                    f"run {i}/{options.runs} {target.name}: {result.requests_per_s:.0f} req/s, "
                    f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                    f"non-2xx {result.non_2xx}"
                )
                results[target.name].append(result)
    floor, service = (Side(t.name, t.description, results[t.name]) for t in targets)
    ratio = service.median_rps / floor.median_rps if floor.median_rps else 0.0
    checks = [Check("ratio", ratio, RATIO_TARGET, at_least=True)]
    passed = all(c.holds for c in checks) and service.non_2xx == 0
    text = render(f"{NAME}: POST {PATH} vs. the floor", [floor, service], ratio, checks)
    data = {
        "benchmark": NAME,
        "options": {**asdict(options), "service_env": dict(options.service_env)},
        "environment": facts,
        "customers": CUSTOMERS,
        "floor": floor.summary(),
        "service": service.summary(),
        "ratio": round(ratio, 4),
        "targets": [{**asdict(c), "holds": c.holds} for c in checks],
        "passed": passed,
    }
    write_json(RESULTS_DIR / f"{NAME}.json", data)
    return Outcome(text, data, passed)
