"""Servers started with extra configuration (workers, limits, Redis): the `server` fixture's
set-up, but as a factory, so one test can start several servers on one database and secret."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from customer_metrics.storage import migrate
from tests.conftest import Backend, create_postgres_database, drop_postgres_database
from tests.process.conftest import _SERVERS, ServerProcess, _clean_environment

StartServer = Callable[..., ServerProcess]


@contextmanager
def servers(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StartServer]:
    """Yields `start(CM_X="…")`, which starts one more server sharing the test's database and
    secret; every one is stopped on exit, and their logs go with a failure's report."""
    env = _clean_environment()
    env["CM_SECRET_KEY"] = f"process-test-secret-{tmp_path.name}"
    env["CM_DATA_DIR"] = str(tmp_path / "data")
    env["CM_POOL_SIZE"] = "8"  # see the `server` fixture
    database_url = ""
    if backend.name == "postgres":
        database_url = create_postgres_database()
        env["CM_DATABASE_URL"] = database_url
        migrate.upgrade(database_url)
    started: list[ServerProcess] = []

    def start(**extra_env: str) -> ServerProcess:
        workdir = tmp_path / f"server-{len(started) + 1}"
        workdir.mkdir()
        process = ServerProcess(workdir, {**env, **extra_env})
        # A ServerProcess that passes `--workers` itself takes the count from here.
        process.workers = int(extra_env.get("CM_WORKERS", "1"))  # type: ignore[attr-defined]
        request.node.stash.setdefault(_SERVERS, []).append(process)
        started.append(process)
        process.start()
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()
        if database_url:
            drop_postgres_database(database_url)
