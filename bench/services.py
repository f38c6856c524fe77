"""Starting the systems the value benchmarks load: the service on PostgreSQL or SQLite (with a
bench organization and its key), the Starlette floor, and a metric to write to."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from harness import (
    BENCH_DIR,
    RESULTS_DIR,
    BenchError,
    Options,
    Server,
    clean_env,
    free_port,
    post_json,
    run_command,
    server,
    venv_bin,
)

METRICS_PATH = "/external/v1/customers/metrics"
BATCH_PATH = "/external/v1/customers/metrics/values"
FLOOR_DESCRIPTION = "bare Starlette + asyncpg, one INSERT … RETURNING, POST /floor"


@dataclass(frozen=True)
class Service:
    """A running service and the bench organization's credentials."""

    server: Server
    headers: dict[str, str]
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def pid(self) -> int:
        return self.server.process.pid


def service_env(options: Options, work: Path, database_url: str | None) -> dict[str, str]:
    """The service's environment: no inherited CM_*, its own data dir, PostgreSQL or SQLite."""
    extra = {"CM_DATA_DIR": str(work / "data")}
    if database_url:
        extra["CM_DATABASE_URL"] = database_url
    env = clean_env(extra)
    env.update(options.service_env)
    return env


def start_service(
    stack: ExitStack, name: str, env: dict[str, str], work: Path, logs: str, org: int | None = None
) -> Service:
    """Migrate (PostgreSQL; `serve` migrates SQLite itself), start `serve --workers 1`, then
    make the bench organization with `org create bench --json` — or, given `org` (a kept
    database's), issue a key for it with `key create --org <org> --json`."""
    cli = venv_bin("customer-metrics")
    if "CM_DATABASE_URL" in env:
        run_command([cli, "migrate"], env, work)
    port = free_port()
    srv = stack.enter_context(
        server(
            name,
            [cli, "serve", "--port", str(port), "--workers", "1"],
            port=port,
            ready_path="/readyz",
            env=env,
            cwd=work,
            log_dir=RESULTS_DIR / "logs" / logs,
        )
    )
    if org is None:
        issue = [cli, "org", "create", "bench", "--json"]
    else:
        issue = [cli, "key", "create", "--org", str(org), "--json"]
    issued = json.loads(run_command(issue, env, work))
    return Service(srv, {"Authorization": f"Bearer {issued['api_key']}"}, env)


def start_floor(
    stack: ExitStack, database_url: str, work: Path, logs: str, extra: Sequence[str] = ()
) -> Server:
    """bench/floor_server.py (the metric_create floor) with a pool of 20 connections."""
    port = free_port()
    cmd = [sys.executable, str(BENCH_DIR / "floor_server.py"), "--port", str(port)]
    cmd += ["--database-url", database_url, "--pool-size", "20", *extra]
    return stack.enter_context(
        server(
            "floor",
            cmd,
            port=port,
            ready_path="/health",
            env=clean_env({}),
            cwd=work,
            log_dir=RESULTS_DIR / "logs" / logs,
        )
    )


def create_metric(service: Service, name: str, data_type: str) -> str:
    """Create a metric definition; return its key (usable as a ref)."""
    body = {"name": name, "data_type": data_type}
    status, answer = post_json(service.base_url + METRICS_PATH, body, service.headers)
    if status != 201:
        raise BenchError(f"creating metric {name!r} answered {status}: {answer}")
    return str(answer["key"])


def post_batch(service: Service, items: list[dict[str, object]]) -> int:
    """One batch write by hand (setup, smoke); returns the accepted count, raises otherwise."""
    url = service.base_url + BATCH_PATH
    status, answer = post_json(url, {"values": items}, service.headers)
    if status != 200 or not isinstance(answer, dict) or answer.get("rejected"):
        raise BenchError(f"batch write answered {status}: {str(answer)[:500]}")
    return int(answer["accepted"])


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise BenchError(f"no VmHWM in /proc/{pid}/status")
