"""Benchmark `POST /external/v1/customers/metrics` (one new metric definition per request,
each with a unique name) against the floor server doing one INSERT per request, on
PostgreSQL, with interleaved wrk runs. Targets: ratio ≥ 0.40 and service p99 ≤ 25 ms."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from harness import (
    BENCH_DIR,
    LUA_DIR,
    RESULTS_DIR,
    BenchError,
    Options,
    WrkResult,
    backend_pids,
    clean_env,
    environment_facts,
    free_port,
    log,
    post_json,
    recreate_database,
    run_command,
    run_wrk,
    server,
    venv_bin,
)
from machine import process_group_pids
from report import Check, Outcome, Side, render, write_json

NAME = "metric_create"
DATABASE = "cm_bench"
SERVICE_PATH = "/external/v1/customers/metrics"
SCRIPT = LUA_DIR / "unique_post.lua"
RATIO_TARGET = 0.40
P99_TARGET_MS = 25.0
FLOOR_DESCRIPTION = "bare Starlette + asyncpg, one INSERT … RETURNING, POST /floor"
SERVICE_DESCRIPTION = f"customer-metrics serve --workers 1, POST {SERVICE_PATH}"


@dataclass(frozen=True)
class Endpoint:
    """One side's load target: the URL wrk hits and the headers it sends."""

    name: str
    description: str
    url: str
    headers: Mapping[str, str]


def _load(
    endpoint: Endpoint,
    options: Options,
    duration: int,
    nonce: str,
    ours: Callable[[], list[int]] | None = None,
) -> WrkResult:
    headers = {"Content-Type": "application/json", **endpoint.headers}
    return run_wrk(
        endpoint.url,
        SCRIPT,
        options=options,
        duration=duration,
        headers=headers,
        script_args=[nonce],
        ours=ours,
    )


def _smoke(endpoint: Endpoint) -> None:
    """One request by hand first, so a misconfiguration fails loudly instead of as 100% 4xx."""
    body = {"name": f"bench smoke {secrets.token_hex(4)}", "data_type": "NUMBER"}
    status, answer = post_json(endpoint.url, body, endpoint.headers)
    if status != 201:
        raise BenchError(f"{endpoint.name}: smoke POST answered {status}, not 201: {answer}")


def _start(
    stack: ExitStack, options: Options, work: Path, url: str
) -> tuple[list[Endpoint], Callable[[], list[int]]]:
    """Migrate the bench database, create the org and key, start both servers. Also returns
    what names "our" processes: both servers' process groups and the database's backends."""
    cli = venv_bin("customer-metrics")
    env = clean_env({"CM_DATABASE_URL": url, "CM_DATA_DIR": str(work / "data")})
    env.update(options.service_env)
    run_command([cli, "migrate"], env, work)
    org = json.loads(run_command([cli, "org", "create", "bench", "--json"], env, work))
    logs = RESULTS_DIR / "logs" / NAME
    floor_port, service_port = free_port(), free_port()
    floor_cmd = [sys.executable, str(BENCH_DIR / "floor_server.py"), "--port", str(floor_port)]
    floor_cmd += ["--database-url", url, "--pool-size", "20"]
    floor_env = clean_env({})
    floor = stack.enter_context(
        server(
            "floor",
            floor_cmd,
            port=floor_port,
            ready_path="/health",
            env=floor_env,
            cwd=work,
            log_dir=logs,
        )
    )
    service_cmd = [cli, "serve", "--port", str(service_port), "--workers", "1"]
    service = stack.enter_context(
        server(
            "service",
            service_cmd,
            port=service_port,
            ready_path="/readyz",
            env=env,
            cwd=work,
            log_dir=logs,
        )
    )
    bearer = {"Authorization": f"Bearer {org['api_key']}"}
    endpoints = [
        Endpoint("floor", FLOOR_DESCRIPTION, floor.base_url + "/floor", {}),
        Endpoint("service", SERVICE_DESCRIPTION, service.base_url + SERVICE_PATH, bearer),
    ]

    def ours() -> list[int]:
        groups = [floor.process.pid, service.process.pid]
        return process_group_pids(groups) + backend_pids(url)

    return endpoints, ours


def run(options: Options) -> Outcome:
    log(f"{NAME}: recreating database {DATABASE}")
    url = recreate_database(options.pg_url, DATABASE)
    facts = environment_facts(options.pg_url)
    results: dict[str, list[WrkResult]] = {}
    with TemporaryDirectory(prefix="cm-bench-") as tmp, ExitStack() as stack:
        endpoints, ours = _start(stack, options, Path(tmp), url)
        for endpoint in endpoints:
            _smoke(endpoint)
            results[endpoint.name] = []
            if options.warmup:
                log(f"warm-up {endpoint.name} {options.warmup}s")
                _load(endpoint, options, options.warmup, f"w{secrets.token_hex(3)}")
        for i in range(1, options.runs + 1):
            for endpoint in endpoints:  # interleaved, so drift and noise hit both sides
                nonce = f"{i}{secrets.token_hex(3)}"
                result = _load(endpoint, options, options.duration, nonce, ours)
                log(
                    f"run {i}/{options.runs} {endpoint.name}: {result.requests_per_s:.0f} req/s, "
                    f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                    f"non-2xx {result.non_2xx}"
                )
                results[endpoint.name].append(result)
    floor, service = (Side(t.name, t.description, results[t.name]) for t in endpoints)
    ratio = service.median_rps / floor.median_rps if floor.median_rps else 0.0
    checks = [
        Check("ratio", ratio, RATIO_TARGET, at_least=True),
        Check("service p99 ms", service.median_p99_ms, P99_TARGET_MS, at_least=False),
    ]
    passed = all(c.holds for c in checks) and service.non_2xx == 0
    text = render(f"{NAME}: POST {SERVICE_PATH} vs. the floor", [floor, service], ratio, checks)
    data = {
        "benchmark": NAME,
        "options": {**asdict(options), "service_env": dict(options.service_env)},
        "environment": facts,
        "floor": floor.summary(),
        "service": service.summary(),
        "ratio": round(ratio, 4),
        "targets": [{**asdict(c), "holds": c.holds} for c in checks],
        "passed": passed,
    }
    write_json(RESULTS_DIR / f"{NAME}.json", data)
    return Outcome(text, data, passed)
