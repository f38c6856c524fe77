"""Row-level security on PostgreSQL. As the app role (backend `postgres_app`) a statement that
forgets its tenant filter sees and changes nothing of another organization, run through the
service's own session with the tenant set as requests set it; a pooled connection carries no
tenant into its next request. As the owning superuser (`postgres`, as the benchmarks run) the
policies are bypassed and requests keep their round trips."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request

from customer_metrics.api.deps import enter_tenant
from customer_metrics.main import create_app
from customer_metrics.queries.fold import fold_once
from customer_metrics.storage.database import Session, open_session
from customer_metrics.storage.models import TENANT_TABLES, Base, Customer, table_of
from customer_metrics.tenancy import Tenant
from tests.builders import Org, create_metric, create_org, write_value
from tests.conftest import Backend, api_client

TABLES = {name: Base.metadata.tables[name] for name in TENANT_TABLES}
NOTHING: dict[str, set[int]] = {table: set() for table in TENANT_TABLES}


def only(organization_id: int) -> dict[str, set[int]]:
    return {table: {organization_id} for table in TENANT_TABLES}


@pytest.fixture
def app_role(backend: Backend) -> Backend:
    if not backend.owner_url:
        pytest.skip("row-level security holds the PostgreSQL app role only")
    return backend


async def _fill(app: Any, name: str) -> Org:
    """An organization with rows in every tenant table but the series rollup's: counters,
    metrics, customers, values, current values, idempotency keys."""
    org = await create_org(app, name)
    async with api_client(app, org.api_key) as client:
        await create_metric(client, name="Seats", data_type="INTEGER")
        created = await client.post(
            "/customers", json={"customer_id": "acme"}, headers={"Idempotency-Key": "c1"}
        )
        assert created.status_code == 201, created.text
        await write_value(client, "acme", "seats", value=3)
    return org


@pytest.fixture
async def two_orgs(app: Any, app_role: Backend) -> tuple[Org, Org]:
    first, second = await _fill(app, "First"), await _fill(app, "Second")
    # The series rollup: folded totals and rows, then a write marked and not folded yet.
    await fold_once(app.state.database)
    for org in (first, second):
        async with api_client(app, org.api_key) as client:
            await write_value(client, "acme", "seats", value=4)
    # The owner sees both in every table: a table empty for the other organization could not
    # show a leak.
    owner = await asyncpg.connect(app_role.owner_url)
    try:
        for table in TENANT_TABLES:
            found = await owner.fetchval(
                f"SELECT array_agg(DISTINCT organization_id) FROM {table} "
                "WHERE organization_id = ANY($1::bigint[])",
                [first.id, second.id],
            )
            assert sorted(found or []) == sorted([first.id, second.id]), table
    finally:
        await owner.close()
    return first, second


@asynccontextmanager
async def request_session(
    app: Any, organization_id: int | None, method: str = "GET"
) -> AsyncIterator[Session]:
    """A session opened, and given its tenant, the way a request's is (api/deps.py)."""
    session = await open_session(
        app.state.database, read_only=method == "GET", lazy_transaction=True
    )
    try:
        if organization_id is not None:
            request = Request({"type": "http", "method": method, "headers": [], "app": app})
            await enter_tenant(request, session, Tenant(organization_id, api_key_id=0))
        yield session
    finally:
        await session.close()


async def organizations_seen(session: Session) -> dict[str, set[int]]:
    """Every tenant table, read without any filter."""
    seen = {}
    for name, table in TABLES.items():
        rows = await session.connection.execute(select(table.c.organization_id))
        seen[name] = {row[0] for row in rows}
    return seen


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_an_unscoped_query_sees_only_the_tenant_of_its_request(app, two_orgs, method):
    for org in two_orgs:
        async with request_session(app, org.id, method) as session:
            assert await organizations_seen(session) == only(org.id)


async def test_an_unscoped_query_without_a_tenant_sees_nothing(app, two_orgs):
    async with request_session(app, None) as session:
        assert await organizations_seen(session) == NOTHING
    async with request_session(app, None, "POST") as session:
        await session.begin_transaction()
        assert await organizations_seen(session) == NOTHING


def _customer_row(organization_id: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "organization_id": organization_id,
        "id": 999_999,
        "customer_id": "planted",
        "time_created": now,
        "time_updated": now,
    }


async def test_writes_to_another_organization_are_refused_or_find_nothing(app, two_orgs):
    first, second = two_orgs
    customers = table_of(Customer)
    async with request_session(app, first.id, "POST") as session:
        conn = session.connection
        # WITH CHECK: no row of another organization goes in, and none of its own moves over.
        with pytest.raises(DBAPIError, match="row-level security"):
            await conn.execute(insert(customers).values(**_customer_row(second.id)))
        await session.rollback()
        with pytest.raises(DBAPIError, match="row-level security"):
            await conn.execute(update(customers).values(organization_id=second.id))
        await session.rollback()
        # USING: another organization's rows are not there to change or delete.
        renamed = await conn.execute(
            update(customers).where(customers.c.organization_id == second.id).values(name="x")
        )
        assert renamed.rowcount == 0
        for table in TABLES.values():
            deleted = await conn.execute(table.delete().where(table.c.organization_id == second.id))
            assert deleted.rowcount == 0, table.name
        await session.commit()
    async with request_session(app, None, "POST") as session:
        await session.begin_transaction()
        with pytest.raises(DBAPIError, match="row-level security"):
            await session.connection.execute(insert(customers).values(**_customer_row(first.id)))
    async with request_session(app, second.id) as session:
        assert await organizations_seen(session) == only(second.id)
        names = await session.connection.execute(select(customers.c.name))
        assert {row[0] for row in names} == {None}


@pytest.fixture
async def one_connection_app(app_role: Backend) -> AsyncIterator[Any]:
    application = create_app(app_role.settings.model_copy(update={"pool_size": 1}))
    async with application.router.lifespan_context(application):
        yield application


async def _backend_pid(session: Session) -> int:
    return int(await session.native.raw.fetchval("SELECT pg_backend_pid()"))


async def test_a_pooled_connection_carries_no_tenant_into_the_next_request(
    one_connection_app, two_orgs
):
    app = one_connection_app
    first, second = two_orgs
    async with api_client(app, first.api_key) as client:
        assert (await client.get("/customers/acme/metrics")).status_code == 200
        await write_value(client, "acme", "seats", value=4)
    async with request_session(app, second.id) as session:
        pid = await _backend_pid(session)
        assert await organizations_seen(session) == only(second.id)
    async with api_client(app, first.api_key) as client:
        assert (await client.get("/customers/acme/metrics")).status_code == 200
    # No tenant at all, on the connection the first organization's requests just used: their
    # setting ended with their transactions (it reads as '' there, which matches no row).
    async with request_session(app, None) as session:
        assert await _backend_pid(session) == pid
        leftover = await session.native.raw.fetchval(
            "SELECT current_setting('cm.organization_id', true)"
        )
        assert leftover in (None, "")
        assert await organizations_seen(session) == NOTHING


async def test_the_purge_function_deletes_only_expired_keys(app, app_role, two_orgs):
    async with request_session(app, None, "POST") as session:
        purged = await session.native.raw.fetchval(
            "SELECT cm_purge_expired_idempotency_keys('infinity', 1000)"
        )
    assert purged == 0
    owner = await asyncpg.connect(app_role.owner_url)
    try:
        kept = await owner.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE organization_id = ANY($1::bigint[])",
            [org.id for org in two_orgs],
        )
    finally:
        await owner.close()
    assert kept == 2


async def test_the_service_knows_whether_row_security_holds_its_role(app, backend):
    if backend.name != "postgres":
        pytest.skip("SQLite has no row-level security")
    await create_org(app)  # the pool's first connection finds out
    assert app.state.database.row_security is bool(backend.owner_url)


def _kind(sql: str) -> str:
    if sql.startswith("BEGIN; SELECT set_config('cm.organization_id'"):
        return "BEGIN+tenant"
    first = sql.split(None, 1)[0].upper()
    return first if first in ("BEGIN", "COMMIT", "ROLLBACK") else "statement"


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What requests send to PostgreSQL, one entry per round trip."""
    sent: list[str] = []
    for name in ("execute", "fetch", "executemany", "fetchval", "fetchrow"):
        method = getattr(asyncpg.connection.Connection, name)

        def spy(self: Any, sql: str, *args: Any, _method: Any = method, **kw: Any) -> Any:
            sent.append(_kind(sql))
            return _method(self, sql, *args, **kw)

        monkeypatch.setattr(asyncpg.connection.Connection, name, spy)
    return sent


S = "statement"
# Per request, with row-level security bypassed (the owning superuser) and in force (app
# role). In force, reads need a transaction to carry the tenant: BEGIN with the setting (one
# round trip) and a ROLLBACK; a write request already had one; a one-statement write (metric
# create, a value for a known customer) gets BEGIN+tenant before it and COMMIT after.
# Creates, value writes and the agent view skip the key lookup for a key the worker has seen
# (it is checked inside their statement), value writes the metric lookup too; a create's
# durability wait is one flush shared by every create waiting at once (here, alone).
ROUND_TRIPS = {
    "list metrics": ([S, S], [S, "BEGIN+tenant", S, "ROLLBACK"]),
    "create metric": ([S, S], ["BEGIN+tenant", S, "COMMIT", S]),
    "write value": ([S], ["BEGIN+tenant", S, "COMMIT"]),
    "agent view": ([S], ["BEGIN+tenant", S, "ROLLBACK"]),
    "update metric": ([S, S, "BEGIN", S, "COMMIT"], [S, "BEGIN+tenant", S, S, "COMMIT"]),
}


async def test_round_trips_per_request(app, backend, round_trips):
    if backend.name != "postgres":
        pytest.skip("round trips to a PostgreSQL server")
    org = await create_org(app)
    async with api_client(app, org.api_key) as client:
        await create_metric(client, name="Seats", data_type="INTEGER")
        await write_value(client, "acme", "seats", value=1)
        assert (await client.get("/customers/acme/metrics")).status_code == 200
        requests = {
            "list metrics": lambda: client.get("/customers/metrics"),
            "create metric": lambda: client.post(
                "/customers/metrics", json={"name": "ARR", "data_type": "NUMBER"}
            ),
            "write value": lambda: client.post(
                "/customers/acme/metrics/seats/values", json={"value": 2}
            ),
            "agent view": lambda: client.get("/customers/acme/metrics"),
            "update metric": lambda: client.patch(
                "/customers/metrics/seats", json={"description": "Seats paid for"}
            ),
        }
        sent = {}
        for name, send in requests.items():
            round_trips.clear()
            assert (await send()).status_code in (200, 201)
            sent[name] = list(round_trips)
    held = 1 if backend.owner_url else 0
    assert sent == {name: expected[held] for name, expected in ROUND_TRIPS.items()}
