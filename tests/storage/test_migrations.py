"""Migrations build the schema on both backends, are idempotent, and match the models."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from customer_metrics.storage import migrate
from customer_metrics.storage.database import Database
from customer_metrics.storage.models import Base
from tests.conftest import Backend, create_postgres_database, drop_postgres_database


def _fresh_url(backend: Backend, tmp_path) -> str:
    if backend.name == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return create_postgres_database()


def _inspect(url: str):
    async def run():
        database = Database(url, pool_size=1)
        try:
            async with database.engine.connect() as conn:

                def look(sync_conn):
                    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                    return (
                        set(inspect(sync_conn).get_table_names()),
                        compare_metadata(context, Base.metadata),
                        {
                            table: inspect(sync_conn).get_pk_constraint(table)[
                                "constrained_columns"
                            ]
                            for table in ("metrics", "counters")
                        },
                        {
                            tuple(uc["column_names"])
                            for uc in inspect(sync_conn).get_unique_constraints("metrics")
                        },
                    )

                return await conn.run_sync(look)
        finally:
            await database.dispose()

    return asyncio.run(run())


def test_migrations_upgrade_an_empty_database_and_match_the_models(backend, tmp_path):
    url = _fresh_url(backend, tmp_path)
    try:
        database = Database(url, pool_size=1)
        assert asyncio.run(migrate.is_up_to_date(database, url)) is False
        asyncio.run(database.dispose())

        migrate.upgrade(url)
        migrate.upgrade(url)  # idempotent

        tables, diff, primary_keys, uniques = _inspect(url)
        assert {"organizations", "api_keys", "counters", "metrics", "alembic_version"} <= tables
        assert diff == []
        # Tenant tables lead their keys with organization_id (distributable by tenant).
        assert primary_keys["metrics"][0] == "organization_id"
        assert primary_keys["counters"][0] == "organization_id"
        assert all(columns[0] == "organization_id" for columns in uniques)

        database = Database(url, pool_size=1)
        assert asyncio.run(migrate.is_up_to_date(database, url)) is True
        asyncio.run(database.dispose())
    finally:
        if backend.name == "postgres":
            drop_postgres_database(url)
