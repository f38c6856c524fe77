"""Every test runs against SQLite and PostgreSQL; the schema comes from the migrations.

PostgreSQL runs twice: as the superuser that owns the tables (`postgres`, the benchmarks'
set-up, where row-level security is bypassed) and as an app role set up by `migrate
--app-role` (`postgres_app`, held to one organization per transaction by row-level
security). The app role runs the API suite and the tests that name it (APP_ROLE_TESTS).

Tests isolate themselves by tenant: each one creates its own organization and key, so one
migrated database per backend serves a whole test session."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from customer_metrics.api_keys import secrets
from customer_metrics.main import create_app
from customer_metrics.settings import Settings
from customer_metrics.storage import migrate, roles
from tests import leaks
from tests.builders import Org, create_org

BACKENDS = [
    b for b in os.environ.get("CM_TEST_BACKENDS", "sqlite,postgres,postgres_app").split(",") if b
]
# What runs on `postgres_app` too (paths under tests/); the rest gains nothing from a third run.
APP_ROLE_TESTS = (
    "api/",
    "test_cli.py",
    "test_transfer.py",
    "storage/test_row_security.py",
    "storage/test_analytic_reads.py",
    "process/test_concurrent_creates.py",
    "process/test_concurrent_increments.py",
)
PG_ADMIN_URL = os.environ.get(
    "CM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True)
class Backend:
    name: str  # "sqlite" or "postgres"
    settings: Settings
    # PostgreSQL as an app role: the owner's URL (migrations, inspection across tenants).
    owner_url: str = ""

    @property
    def database_url(self) -> str:
        return self.settings.resolved_database_url


def _postgres_required() -> bool:
    return os.environ.get("CI", "").lower() == "true"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_postgres_database() -> str:
    name = f"cm_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as error:
        if _postgres_required():
            pytest.fail(f"PostgreSQL is required in CI and unreachable: {error}")
        pytest.skip(f"PostgreSQL unreachable: {error}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def create_app_role(owner_url: str) -> str:
    """Migrates the database as its owner and sets up an app role of its own (roles are
    shared by the whole server, so one per database); returns the URL that connects as it."""
    migrate.upgrade(owner_url)
    role = owner_url.rsplit("/", 1)[1] + "_app"
    password = uuid.uuid4().hex
    asyncio.run(roles.grant_app_role(owner_url, role, password))
    url = make_url(owner_url).set(username=role, password=password)
    return url.render_as_string(hide_password=False)


def drop_app_role(app_url: str) -> None:
    """After its database is dropped (which takes its grants along)."""
    asyncio.run(_admin(f'DROP ROLE IF EXISTS "{make_url(app_url).username}"'))


def make_settings(tmp: Path, database_url: str = "") -> Settings:
    # No background fold of the series rollup: tests fold when they mean to (fold_once), so
    # what a test sees never hangs on the timing of one.
    return Settings(
        database_url=database_url,
        data_dir=tmp,
        secret_key="test-secret-" + tmp.name,
        rollup_fold_interval_seconds=86400,
    )


@pytest.fixture(scope="session", autouse=True)
def remember_issued_keys() -> Iterator[None]:
    """Every key made in this process (builders, the command line run in-process, `serve`'s
    first key) is remembered, to be searched for where no key may be."""
    issue = secrets.new_key
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(secrets, "new_key", lambda: leaks.remember(issue()))
        yield


@pytest.fixture(scope="session", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp(f"data-{request.param}")
    if request.param == "sqlite":
        settings = make_settings(tmp)
        migrate.upgrade(settings.resolved_database_url)
        yield Backend("sqlite", settings)
        _assert_no_key_stored(settings.resolved_database_url, tmp / "customer-metrics.db")
        return
    url = create_postgres_database()
    app_url = ""
    try:
        if request.param == "postgres_app":
            app_url = create_app_role(url)
            yield Backend("postgres", make_settings(tmp, app_url), owner_url=url)
        else:
            migrate.upgrade(url)
            yield Backend("postgres", make_settings(tmp, url))
        _assert_no_key_stored(url, None)  # as the owner, who sees every organization's rows
    finally:
        drop_postgres_database(url)
        if app_url:
            drop_app_role(app_url)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_app_role = params.get("backend") == "postgres_app"
        path = item.path.relative_to(tests).as_posix()
        (dropped if on_app_role and not path.startswith(APP_ROLE_TESTS) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _assert_no_key_stored(url: str, sqlite_path: Path | None) -> None:
    """After the session's last test on this database: none of the keys it made is stored."""
    leaks.assert_no_key_in(leaks.dump_database(url, sqlite_path), f"the session's database {url}")


@pytest.fixture(scope="session")
async def app(backend: Backend) -> AsyncIterator[object]:
    application = create_app(backend.settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def anon(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", event_hooks=leaks.RESPONSE_HOOKS
    ) as client:
        yield client


@pytest.fixture
async def org(app: object) -> Org:
    return await create_org(app)


def api_client(app: object, api_key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://test/external/v1",
        headers=headers,
        event_hooks=leaks.RESPONSE_HOOKS,  # no response may carry a key
    )


@pytest.fixture
async def client(app: object, org: Org) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(app, org.api_key) as scoped:
        yield scoped


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """What the service logged (and anything else printed) during a test holds no key.

    The output as written (the service's log handler redacts keys), not pytest's copy of the
    log records, which it takes before any handler formats them."""
    report = yield
    written = (
        text
        for title, text in report.sections
        if title in (f"Captured stdout {report.when}", f"Captured stderr {report.when}")
    )
    found = leaks.leaked("".join(written))
    if found:
        message = f"API key(s) {found} in the output written during {report.when}"
        report.sections.append(("API keys leaked", message))
        if not report.failed:
            report.outcome = "failed"
            report.longrepr = message
    return report
