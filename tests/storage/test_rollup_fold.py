"""The series rollup's fold (queries/rollup_repository.py) while customers are written: a
mark written again between the fold's read and its commit survives the fold, so the
changes behind it are folded next time, and the fold does not hold marks while it works;
two folds of one organization never run side by side."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy import create_engine, select

from customer_metrics.queries import rollup_repository
from customer_metrics.queries.fold import fold_once, fold_organization
from customer_metrics.storage import dialect
from customer_metrics.storage.database import open_session
from customer_metrics.storage.models import Base, RollupDirty, table_of
from tests.builders import create_metric, create_org, write_value
from tests.conftest import api_client

_dirty = table_of(RollupDirty)
DAY = {"from": "2024-03-08T00:00:00Z", "to": "2024-03-09T00:00:00Z", "interval": "day"}


async def _marks(app: Any, organization_id: int) -> list[Any]:
    session = await open_session(app.state.database, read_only=True)
    try:
        session.scope(organization_id)
        stmt = select(
            _dirty.c.metric_ref, _dirty.c.customer_ref, _dirty.c.since, _dirty.c.version
        ).where(_dirty.c.organization_id == organization_id)
        return list((await session.connection.execute(stmt)).all())
    finally:
        await session.close()


async def _day(client: Any, agg: str) -> Any:
    response = await client.get("/customers/metrics/arr/series", params={**DAY, "agg": agg})
    assert response.status_code == 200, response.text
    return response.json(parse_float=Decimal)["data"][0]["value"]


@asynccontextmanager
async def _holding_totals(url: str, organization_id: int) -> AsyncIterator[asyncpg.Connection]:
    """PostgreSQL: the organization's rows of `metric_rollups` locked by another transaction,
    so a fold's statement, once it has read everything, waits to add to them."""
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            await connection.execute(
                "SELECT 1 FROM metric_rollups WHERE organization_id = $1 FOR UPDATE",
                organization_id,
            )
            yield connection
    finally:
        await connection.close()


async def _until_blocked_by(holder: asyncpg.Connection) -> None:
    """Until a statement of another connection waits for a lock `holder` holds."""
    pid = holder.get_server_pid()
    for _ in range(500):
        waiting = await holder.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", pid
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the fold never reached the locked totals")


async def _first_value(client: Any) -> None:
    """Metric `arr`, customer `acme`, and its value 5 at 2024-03-08T10:00Z."""
    await create_metric(client, name="arr", key="arr", data_type="NUMBER")
    await client.put("/customers/acme", json={})
    await write_value(client, "acme", "arr", value="5", observed_at="2024-03-08T10:00:00Z")


async def test_a_mark_written_again_while_a_fold_runs_survives_it(app, backend, monkeypatch):
    org = await create_org(app)
    database = app.state.database
    async with api_client(app, org.api_key) as client:
        await _first_value(client)
        await fold_once(database)  # the totals of 10:00-10:15 exist from here on
        await write_value(client, "acme", "arr", value="7", observed_at="2024-03-08T10:05:00Z")
        [(*_, version)] = await _marks(app, org.id)

        later = {"value": "11", "observed_at": "2024-03-08T11:00:00Z"}
        if backend.name == "postgres":
            # The fold's one statement reads the mark (and the rows behind it), then waits
            # for the locked totals; meanwhile the customer is written again, and commits.
            async with _holding_totals(backend.owner_url or backend.database_url, org.id) as lock:
                fold = asyncio.create_task(fold_organization(database, org.id))
                await _until_blocked_by(lock)
                # At once: the fold has not taken the mark yet (it does so last).
                await asyncio.wait_for(write_value(client, "acme", "arr", **later), 10)
            assert await fold == 1
        else:
            # SQLite: the fold computes its changes before its write transaction, holding no
            # lock; the customer is written again meanwhile, and commits (each time the fold
            # computes without the lock, as a client sending the same customers would).
            compute = rollup_repository._changes_per_pair
            writes = []

            async def written_meanwhile(*args: Any) -> Any:
                changed = await compute(*args)
                if not writes:  # the second computation is the one under the write lock
                    writes.append(later)
                    await asyncio.wait_for(write_value(client, "acme", "arr", **later), 10)
                return changed

            monkeypatch.setattr(rollup_repository, "_changes_per_pair", written_meanwhile)
            # The customer is read and computed again under the lock: folded all the same,
            # so a fold moves on however often its customers are written.
            assert await fold_organization(database, org.id) == 1
            monkeypatch.undo()
            assert writes == [later]
            assert await _marks(app, org.id) == []

        if backend.name == "postgres":  # the mark the fold read was written again: it stays
            [(*_, version_after)] = await _marks(app, org.id)
            assert version_after > version
        for _ in range(2):  # as it stands, then folded
            assert await _day(client, "sum") == 23
            assert await _day(client, "count") == 3
            assert await _day(client, "snapshot_sum") == 11
            await fold_once(database)
        assert await _marks(app, org.id) == []


async def test_a_fold_of_an_organization_waits_while_another_holds_its_lock(app, backend):
    """PostgreSQL: two folds of one organization (two workers' background folds) never run
    side by side: the second folds nothing while the first holds the lock, to its commit."""
    if backend.name != "postgres":
        pytest.skip("SQLite's write transactions are exclusive already")
    org = await create_org(app)
    database = app.state.database
    async with api_client(app, org.api_key) as client:
        await _first_value(client)
        first = await open_session(database, read_only=False)
        try:
            first.scope(org.id)
            await first.begin_transaction()
            lock = dialect.fold_lock(org.id, "postgresql")
            assert (await first.connection.execute(lock)).scalar() is True
            assert await fold_organization(database, org.id) == 0
            assert len(await _marks(app, org.id)) == 1
        finally:
            await first.close()
        assert await fold_organization(database, org.id) == 1
        assert await _marks(app, org.id) == []
        assert await _day(client, "sum") == 5


async def test_an_organization_whose_fold_fails_does_not_hold_up_the_others(app, monkeypatch):
    orgs = [await create_org(app, "fold one"), await create_org(app, "fold two")]
    for org in orgs:
        async with api_client(app, org.api_key) as client:
            await _first_value(client)
        assert len(await _marks(app, org.id)) == 1
    import customer_metrics.queries.fold as fold_module

    real, failed = fold_module.fold_organization, []

    async def first_one_fails(database: Any, organization_id: int) -> int:
        if organization_id in {o.id for o in orgs} and not failed:
            failed.append(organization_id)  # whichever comes first (e.g. a metric deleted)
            raise RuntimeError("metric deleted meanwhile")
        return await real(database, organization_id)

    monkeypatch.setattr(fold_module, "fold_organization", first_one_fails)
    with pytest.raises(RuntimeError):
        await fold_once(app.state.database)  # the failure is still reported, after the rest
    [other] = [o for o in orgs if o.id not in failed]
    assert await _marks(app, other.id) == []
    assert len(await _marks(app, failed[0])) == 1
    monkeypatch.undo()
    await fold_once(app.state.database)
    assert await _marks(app, failed[0]) == []


async def test_a_fold_overtaken_by_another_of_its_organization_folds_nothing(
    app, backend, monkeypatch
):
    """SQLite: two folds of one organization (two workers') may compute side by side. Here
    the second folds the customer, which is then written again (a new mark, version 0 as
    the first one was); the first must not take that mark with its stale changes."""
    if backend.name == "postgres":
        pytest.skip("PostgreSQL's folds of an organization take turns on a lock (above)")
    org = await create_org(app)
    database = app.state.database
    async with api_client(app, org.api_key) as client:
        await _first_value(client)
        compute = rollup_repository._changes_per_pair
        overtaking: list[int] = []

        async def overtaken(*args: Any) -> Any:
            changed = await compute(*args)
            if not overtaking:
                overtaking.append(0)
                overtaking[0] = await fold_organization(database, org.id)
                await write_value(
                    client, "acme", "arr", value="7", observed_at="2024-03-08T10:05:00Z"
                )
            return changed

        monkeypatch.setattr(rollup_repository, "_changes_per_pair", overtaken)
        assert await fold_organization(database, org.id) == 0
        monkeypatch.undo()
        assert overtaking == [1]
        assert [m[3] for m in await _marks(app, org.id)] == [0]  # the new mark stays
        for _ in range(2):  # as it stands, then folded
            assert await _day(client, "sum") == 12
            assert await _day(client, "count") == 2
            await fold_once(database)
        assert await _marks(app, org.id) == []


async def test_a_deleted_value_folded_once_is_not_taken_out_again(app):
    """A fold that takes a deleted value out of the totals also forgets it was counted: a
    later fold from an earlier time (which reads the customer's rows again from then on)
    does not subtract it a second time."""
    org = await create_org(app)
    database = app.state.database
    async with api_client(app, org.api_key) as client:
        await _first_value(client)  # 5 at 10:00
        await write_value(client, "acme", "arr", value="7", observed_at="2024-03-08T10:20:00Z")
        await fold_once(database)
        deleted = await client.delete(
            "/customers/acme/metrics/arr/values",
            params={"from": "2024-03-08T10:20:00Z", "to": "2024-03-08T10:21:00Z"},
        )
        assert deleted.json() == {"deleted": 1}
        await fold_once(database)
        assert await _day(client, "sum") == 5
        # Earlier than both: the next fold reads the customer's rows from 09:00 on.
        await write_value(client, "acme", "arr", value="1", observed_at="2024-03-08T09:00:00Z")
        await fold_once(database)
        assert await _marks(app, org.id) == []
        assert await _day(client, "sum") == 6
        assert await _day(client, "count") == 2
        assert await _day(client, "snapshot_sum") == 5


async def test_a_replaced_value_is_counted_at_its_new_value_by_later_folds(app):
    """A value written again at the same observed_at replaces the counted one: later folds
    from an earlier time see the new value, not the first."""
    org = await create_org(app)
    database = app.state.database
    async with api_client(app, org.api_key) as client:
        await _first_value(client)  # 5 at 10:00
        await fold_once(database)
        await write_value(client, "acme", "arr", value="8", observed_at="2024-03-08T10:00:00Z")
        await fold_once(database)
        await write_value(client, "acme", "arr", value="2", observed_at="2024-03-08T09:00:00Z")
        await fold_once(database)
        assert await _marks(app, org.id) == []
        assert await _day(client, "sum") == 10
        assert await _day(client, "count") == 2
        assert await _day(client, "snapshot_sum") == 8


async def test_sqlite_fold_copies_counted_rows_pair_by_pair(backend, tmp_path):
    """SQLite's fold copies each folded customer's rows in the database: reached through
    the keys pair by pair, never by scanning the organization's rows (a scan held the write
    lock for seconds once the tables grew, and writers timed out). Planned on a database of
    its own with statistics (ANALYZE), as a long-running one has them."""
    if backend.name != "sqlite":
        pytest.skip("PostgreSQL folds in one statement of its own")
    engine = create_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        Base.metadata.create_all(engine)
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            for statement in rollup_repository._counting("sqlite"):
                sql = str(statement.compile(dialect=engine.dialect))
                found = connection.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + sql, tuple([None] * sql.count("?"))
                )
                plan = [row[3] for row in found]
                searched = [p for p in plan if p.startswith("SEARCH")]
                assert searched, plan
                assert all("customer_ref=?" in p for p in searched), plan
                assert not [p for p in plan if p.startswith("SCAN metric_")], plan
    finally:
        engine.dispose()


async def test_a_later_write_keeps_the_earlier_mark(app):
    """A customer marked from 10:00 and written again at 11:00 before a fold stays marked
    from 10:00: the fold counts both values."""
    org = await create_org(app)
    async with api_client(app, org.api_key) as client:
        await _first_value(client)  # 5 at 10:00, not folded
        await write_value(client, "acme", "arr", value="7", observed_at="2024-03-08T11:00:00Z")
        assert [m[2].hour for m in await _marks(app, org.id)] == [10]
        await fold_once(app.state.database)
        assert await _marks(app, org.id) == []
        assert await _day(client, "count") == 2
        assert await _day(client, "sum") == 12


async def test_a_customer_written_earlier_while_its_fold_computes_is_counted_once(
    app, backend, monkeypatch
):
    """SQLite: the fold computes without the lock; the customer is written meanwhile at an
    earlier time, so under the lock its mark (now from that time) is read and computed
    again, and its counted rows are made from that mark: a later fold from an even earlier
    time counts that value once, not twice."""
    if backend.name != "sqlite":
        pytest.skip("PostgreSQL folds in one statement, computing nothing in the worker")
    org = await create_org(app)
    database = app.state.database
    async with api_client(app, org.api_key) as client:
        await _first_value(client)  # 5 at 10:00
        await fold_once(database)
        await write_value(client, "acme", "arr", value="7", observed_at="2024-03-08T10:10:00Z")
        compute = rollup_repository._changes_per_pair
        writes: list[str] = []

        async def written_earlier(*args: Any) -> Any:
            changed = await compute(*args)
            if not writes:
                writes.append("09:00")
                await write_value(
                    client, "acme", "arr", value="2", observed_at="2024-03-08T09:00:00Z"
                )
            return changed

        monkeypatch.setattr(rollup_repository, "_changes_per_pair", written_earlier)
        assert await fold_organization(database, org.id) == 1
        monkeypatch.undo()
        await write_value(client, "acme", "arr", value="1", observed_at="2024-03-08T08:00:00Z")
        await fold_once(database)
        assert await _marks(app, org.id) == []
        assert await _day(client, "count") == 4
        assert await _day(client, "sum") == 15
        assert await _day(client, "snapshot_sum") == 7
