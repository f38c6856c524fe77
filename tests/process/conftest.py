"""A real `customer-metrics serve` process per test, on a fresh database of the test's backend.

What only a process shows: concurrency through a real socket, kill -9, the command line and
the server sharing one database. When a test fails, every server log it produced is attached
to the report ("server log" section)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from customer_metrics.api_keys.secrets import redact_keys
from customer_metrics.storage import migrate
from tests import leaks
from tests.conftest import (
    Backend,
    create_app_role,
    create_postgres_database,
    drop_app_role,
    drop_postgres_database,
)

API_PATH = "/external/v1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
CLI_TIMEOUT_SECONDS = 60.0
_SERVERS = pytest.StashKey[list["ServerProcess"]]()


def _executable() -> str:
    script = Path(sys.executable).with_name("customer-metrics")
    if not script.exists():
        pytest.fail(f"{script} is missing: install the package (make install)")
    return str(script)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _clean_environment() -> dict[str, str]:
    # Only the configuration this fixture sets may reach the server and the command line.
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("CM_") and name != "DATABASE_URL"
    }


class ServerProcess:
    """`customer-metrics serve` in its own process group; restartable on the same database.

    Every process runs in `workdir`, so a developer's `.env` is never read."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.workers = 1  # `serve --workers`, from the next start on
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PATH

    def client(self, api_key: str | None = None, **options: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.AsyncClient(
            base_url=self.api_url,
            headers=headers,
            timeout=httpx.Timeout(60.0),
            event_hooks=leaks.RESPONSE_HOOKS,  # no response may carry a key
            **options,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        assert self.process is None, "server already running"
        self.port = _free_port()
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} on port {self.port} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [
                    _executable(),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_healthy()

    def _wait_until_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        with httpx.Client(base_url=self.base_url, timeout=1.0) as probe:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    self.process = None
                    pytest.fail(f"server exited with {code} before it was healthy:\n{self.log()}")
                try:
                    if probe.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.stop()
        pytest.fail(
            f"server not healthy on {self.base_url} after {START_TIMEOUT_SECONDS}s:\n{self.log()}"
        )

    def kill(self) -> None:
        """SIGKILL the whole process group, as `kill -9` would: no shutdown code runs."""
        self._signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            self.process = None

    def terminate(self) -> None:
        """SIGTERM to `customer-metrics serve` alone, as a container runtime sends it; with
        `--workers` it is the server's own job to pass it on."""
        assert self.process is not None, "server not running"
        self.process.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        """The exit status of a terminated server (then reaps any worker left behind)."""
        assert self.process is not None, "server not running"
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._signal_group(signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            self.process = None

    def serving_pids(self) -> list[int]:
        """The processes that serve requests: the server itself, or with `--workers` the
        worker processes it spawned (not its multiprocessing resource tracker)."""
        assert self.process is not None, "server not running"
        leader = self.process.pid
        if self.workers == 1:
            return [leader]
        workers = []
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                # The field after the parenthesised command name is the state, then the ppid.
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == leader and b"spawn_main" in (proc / "cmdline").read_bytes():
                    workers.append(int(proc.name))
        return workers

    def stop(self) -> None:
        """SIGTERM the process group; SIGKILL whatever is still there after a grace period."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        # Also reaps workers that outlived the parent.
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        self.process = None

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        # The group id is the leader's pid: it was started in a session of its own.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a `customer-metrics` command on the server's database and configuration."""
        done = subprocess.run(
            [_executable(), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
            check=False,
        )
        with self.log_path.open("a") as log:
            # (The harness's own note of the command: a key given as an argument is cut.)
            command = redact_keys(" ".join(args))
            log.write(f"\n----- cli {command} -> exit {done.returncode} -----\n")
            log.write(done.stderr)
        leaks.remember_printed(done.stdout)  # `org create`, `key create`
        return done

    def cli_json(self, *args: str) -> Any:
        done = self.cli(*args, "--json")
        assert done.returncode == 0, f"{args} failed: {done.stdout}{done.stderr}"
        return json.loads(done.stdout)

    def create_org(self, name: str) -> dict[str, Any]:
        created = self.cli_json("org", "create", name)
        assert set(created) == {"organization_id", "name", "api_key"}, created
        return created  # type: ignore[no-any-return]


@pytest.fixture
def server(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[ServerProcess]:
    """A started server on a database of its own; terminated (process group) at teardown."""
    env = _clean_environment()
    env["CM_SECRET_KEY"] = f"process-test-secret-{tmp_path.name}"
    env["CM_DATA_DIR"] = str(tmp_path / "data")
    # A PostgreSQL server may open 2 x CM_POOL_SIZE connections. The suite shares one
    # PostgreSQL (often max_connections=100) with every xdist worker and whatever else runs on
    # it; at the default (20 -> 40 connections) a busy machine ran out, and a request that
    # cannot get a connection is a 500 today. 16 connections still race plenty.
    env["CM_POOL_SIZE"] = "8"
    database_url = app_url = ""
    if backend.name == "postgres":
        database_url = create_postgres_database()
        env["CM_DATABASE_URL"] = database_url
    # SQLite: no URL, so `serve` migrates the embedded file in CM_DATA_DIR on start.
    process = ServerProcess(tmp_path, env)
    request.node.stash.setdefault(_SERVERS, []).append(process)
    try:
        if backend.owner_url:  # the server connects as an app role held by row security
            app_url = env["CM_DATABASE_URL"] = create_app_role(database_url)
        elif database_url:
            migrate.upgrade(database_url)
        process.start()
        yield process
        process.stop()
        # What the server printed and logged, and its database, hold none of the keys made.
        output = leaks.without_bootstrap_notice(process.log())
        leaks.assert_no_key_in(output, f"the server's output ({process.log_path})")
        sqlite_path = None if database_url else Path(env["CM_DATA_DIR"]) / "customer-metrics.db"
        leaks.assert_no_key_in(leaks.dump_database(database_url, sqlite_path), "its database")
    finally:
        process.stop()
        if database_url:
            drop_postgres_database(database_url)
        if app_url:
            drop_app_role(app_url)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for index, process in enumerate(item.stash.get(_SERVERS, [])):
            report.sections.append((f"server log #{index + 1} ({process.log_path})", process.log()))
    return report
