"""Shared benchmark plumbing: options, bench databases, server processes, and wrk runs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from machine import cpu_busy, cpu_count

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
LUA_DIR = BENCH_DIR / "lua"
WRK_MARKER = "WRK_RESULT "


class BenchError(RuntimeError):
    """A benchmark could not run (missing tool, server did not start, bad response)."""


@dataclass(frozen=True)
class Options:
    """What every benchmark is run with; set from run.py's command line."""

    duration: int = 10
    connections: int = 64
    threads: int = 2
    runs: int = 3
    warmup: int = 2
    pg_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    service_env: Mapping[str, str] = field(default_factory=dict)
    # Load kept data sets again instead of reusing them (the queries benchmark's).
    regenerate: bool = False


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- databases ---------------------------------------------------------------------------


def database_url(admin_url: str, name: str) -> str:
    """The admin URL pointing at database `name` instead (same host, user and query)."""
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(admin_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def recreate_database(admin_url: str, name: str) -> str:
    """Drop (forcibly) and create database `name`; return its URL."""
    quoted = '"' + name.replace('"', '""') + '"'
    try:
        asyncio.run(
            _admin(
                admin_url,
                f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)",
                f"CREATE DATABASE {quoted}",
            )
        )
    except (OSError, asyncpg.PostgresError) as error:
        raise BenchError(f"cannot recreate database {name} via {admin_url}: {error}") from error
    return database_url(admin_url, name)


async def _server_facts(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        names = ("server_version", "synchronous_commit", "fsync", "shared_buffers")
        return {n: str(await conn.fetchval(f"SHOW {n}")) for n in names}
    finally:
        await conn.close()


def postgres_facts(url: str) -> dict[str, str]:
    """A few server settings that move write benchmarks, for the results file."""
    return asyncio.run(_server_facts(url))


async def _backend_pids(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() OR datname IS NULL"
        )
        return [int(r["pid"]) for r in rows if r["pid"] != conn.get_server_pid()]
    finally:
        await conn.close()


def backend_pids(url: str) -> list[int]:
    """PostgreSQL processes working for this database, plus the shared ones (WAL writer,
    checkpointer, autovacuum launcher…): the database side of "our" load."""
    try:
        return asyncio.run(_backend_pids(url))
    except (OSError, asyncpg.PostgresError):
        return []


async def _vacuum(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


def vacuum(database_url: str) -> None:
    """What autovacuum would have done by now (it may be off: this machine's PostgreSQL runs
    with `autovacuum = off`): every run's current-value updates leave as many dead rows (and
    dead index entries: a value change is never a HOT update), which the next run would
    otherwise wade through, and the planner gets statistics."""
    asyncio.run(_vacuum(database_url))


# --- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def venv_bin(name: str) -> str:
    """A console script installed next to the running interpreter (the project's .venv)."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise BenchError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The inherited environment without any CM_*/DATABASE_URL settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CM_") and k != "DATABASE_URL"}
    env.update(extra)
    return env


def run_command(cmd: Sequence[str], env: Mapping[str, str], cwd: Path) -> str:
    """Run to completion; return stdout, or raise with its output when it fails."""
    done = subprocess.run(list(cmd), env=dict(env), cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    return done.stdout


@dataclass
class Server:
    """A server started in its own process group, its output going to `log_path`."""

    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop on {sig.name}")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def server(
    name: str,
    cmd: Sequence[str],
    *,
    port: int,
    ready_path: str,
    env: Mapping[str, str],
    cwd: Path,
    log_dir: Path,
    timeout: float = 30.0,
) -> Iterator[Server]:
    """Start `cmd`, wait until GET `ready_path` answers 200, and always stop it afterwards.
    Its output goes to `log_dir/<name>.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    srv = Server(name, f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_ready(srv, ready_path, timeout)
        log(f"{name} is up at {srv.base_url} (pid {process.pid})")
        yield srv
    finally:
        srv.stop()


def _wait_ready(srv: Server, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.process.poll() is not None:
            raise BenchError(f"{srv.name} exited ({srv.process.returncode}):\n{srv.log_tail()}")
        try:
            with urllib.request.urlopen(srv.base_url + path, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise BenchError(f"{srv.name} not ready after {timeout:.0f}s:\n{srv.log_tail()}")


def post_json(url: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> tuple[int, Any]:
    """One POST, for a smoke check before loading: (status, parsed JSON body)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    for key, value in headers.items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


# --- wrk -----------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The wrk binary; installs Debian's package when it is missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is not installed; trying `apt-get install -y wrk` (Debian package) ...")
    if os.geteuid() != 0:
        raise BenchError("wrk is missing and this is not root: run `sudo apt-get install wrk`.")
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, check=False).returncode != 0:
        log("install failed; running `apt-get update` and trying again ...")
        subprocess.run(["apt-get", "update", "-q"], check=False)
        subprocess.run(install, check=False)
    found = shutil.which("wrk")
    if not found:
        raise BenchError(
            "wrk is missing and `apt-get install -y wrk` failed: install the Debian package "
            "`wrk` by hand, then run the benchmark again."
        )
    log(f"installed wrk at {found}")
    return found


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms) and what went wrong."""

    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    # Share of the CPUs that other work (not the servers, not their database backends) used
    # in the half second before the run.
    busy_before: float | None = None


def run_wrk(
    url: str,
    script: Path,
    *,
    options: Options,
    duration: int,
    headers: Mapping[str, str],
    script_args: Sequence[str] = (),
    ours: Callable[[], Iterable[int]] | None = None,
) -> WrkResult:
    """Load `url` with `script` (which must print a WRK_RESULT line from `done()`). With
    `ours` (the pids of the servers and their database backends), first read how busy the
    CPUs are with anything else, into `busy_before`."""
    cmd = [
        ensure_wrk(),
        f"--threads={options.threads}",
        f"--connections={options.connections}",
        f"--duration={duration}s",
        "--timeout=10s",
        f"--script={script}",
    ]
    for key, value in headers.items():
        cmd += ["--header", f"{key}: {value}"]
    cmd += [url, "--", *script_args]
    busy = cpu_busy(0.5, ours) if ours else None
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    return replace(parse_wrk(done.stdout), busy_before=None if busy is None else round(busy, 3))


def parse_wrk(stdout: str) -> WrkResult:
    """Read the JSON line that bench/lua/*.lua print from wrk's `done()`."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(WRK_MARKER)), None)
    if line is None:
        raise BenchError(f"no {WRK_MARKER.strip()} line in wrk's output:\n{stdout}")
    raw = json.loads(line[len(WRK_MARKER) :])
    statuses = {str(k): int(v) for k, v in (raw.get("statuses") or {}).items()}
    duration_s = raw["duration_us"] / 1e6
    return WrkResult(
        requests=int(raw["requests"]),
        duration_s=duration_s,
        requests_per_s=raw["requests"] / duration_s if duration_s else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        non_2xx=sum(n for s, n in statuses.items() if not 200 <= int(s) < 300),
        statuses=statuses,
        socket_errors={k: int(v) for k, v in raw["errors"].items()},
    )


def environment_facts(admin_url: str) -> dict[str, Any]:
    """Where a result came from: commit, machine, PostgreSQL settings, wrk version."""

    def out(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=REPO_DIR, capture_output=True, text=True, check=False)
        return (done.stdout or done.stderr).strip()

    busy = cpu_busy()
    if busy is not None and busy > 0.25:
        log(
            f"WARNING: the machine is already {busy:.0%} busy before the benchmark; "
            "other work (tests, builds) will skew these numbers"
        )
    return {
        "cpu_busy_before": None if busy is None else round(busy, 3),
        "load_average": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": out("git", "rev-parse", "HEAD"),
        # Uncommitted changes under src/ mean the service measured is not exactly git_commit.
        "src_dirty": bool(out("git", "status", "--porcelain", "--", "src")),
        "cpus": cpu_count(),
        "python": sys.version.split()[0],
        "wrk": out(ensure_wrk(), "--version").splitlines()[0],
        "postgres": postgres_facts(admin_url),
    }
