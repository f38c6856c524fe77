"""The series rollup's fold (queries/rollup_repository.py): two folds of one organization
never run side by side."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from customer_metrics.queries.fold import fold_organization
from customer_metrics.storage import dialect
from customer_metrics.storage.database import open_session
from customer_metrics.storage.models import RollupDirty, table_of
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


async def test_a_fold_of_an_organization_waits_while_another_holds_its_lock(app, backend):
    """PostgreSQL: two folds of one organization (two workers' background folds) never run
    side by side: the second folds nothing while the first holds the lock, to its commit."""
    if backend.name != "postgres":
        pytest.skip("SQLite's write transactions are exclusive already")
    org = await create_org(app)
    database = app.state.database
    async with api_client(app, org.api_key) as client:
        await create_metric(client, name="arr", key="arr", data_type="NUMBER")
        await client.put("/customers/acme", json={})
        await write_value(client, "acme", "arr", value="5", observed_at="2024-03-08T10:00:00Z")
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
