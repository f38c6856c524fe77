"""Migrations build the schema on both backends, are idempotent, and match the models."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from customer_metrics.storage import migrate
from customer_metrics.storage.database import Database
from customer_metrics.storage.models import TENANT_TABLES, Base
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
                    inspector = inspect(sync_conn)
                    keys = {
                        table: inspector.get_pk_constraint(table)["constrained_columns"]
                        for table in TENANT_TABLES
                    }
                    others = {
                        (table, tuple(uc["column_names"]))
                        for table in TENANT_TABLES
                        for uc in inspector.get_unique_constraints(table)
                    } | {
                        (table, tuple(ix["column_names"]))
                        for table in TENANT_TABLES
                        for ix in inspector.get_indexes(table)
                    }
                    return (
                        set(inspector.get_table_names()),
                        compare_metadata(context, Base.metadata),
                        keys,
                        others,
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
        assert {"organizations", "api_keys", "alembic_version", *TENANT_TABLES} <= tables
        assert diff == []
        # Tenant tables lead every key and index with organization_id (distributable by tenant).
        assert all(columns[0] == "organization_id" for columns in primary_keys.values())
        assert uniques
        assert all(columns[0] == "organization_id" for _, columns in uniques), uniques

        database = Database(url, pool_size=1)
        assert asyncio.run(migrate.is_up_to_date(database, url)) is True
        asyncio.run(database.dispose())
    finally:
        if backend.name == "postgres":
            drop_postgres_database(url)


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path):
    url = f"sqlite:///{tmp_path / 'pragmas.db'}"
    migrate.upgrade(url)

    async def read():
        database = Database(url, pool_size=1)
        try:
            async with database.engine.connect() as conn:
                return [
                    (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                    for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
                ]
        finally:
            await database.dispose()

    assert asyncio.run(read()) == ["wal", 1, 30000, 2]


def test_every_table_keyed_by_organization_is_a_tenant_table():
    """Row-level security covers TENANT_TABLES: a new table keyed by organization belongs
    there (and in a migration that gives it the policy). `api_keys` is the admin plane."""
    keyed = {t.name for t in Base.metadata.tables.values() if "organization_id" in t.c}
    assert keyed - {"api_keys"} == set(TENANT_TABLES)


async def _row_security(url: str) -> tuple[set[str], set[str], bool]:
    """Tables with row-level security on, tables with the tenant policy, and whether the
    purge function exists."""
    conn = await asyncpg.connect(url)
    try:
        enabled = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relrowsecurity AND relnamespace = "
            "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
        )
        policies = await conn.fetch(
            "SELECT tablename FROM pg_policies WHERE policyname = 'tenant_isolation' "
            "AND schemaname = current_schema()"
        )
        purge = await conn.fetchval(
            "SELECT to_regproc('cm_purge_expired_idempotency_keys') IS NOT NULL"
        )
    finally:
        await conn.close()
    return {r[0] for r in enabled}, {r[0] for r in policies}, purge


def test_row_security_migration_is_reversible(backend, tmp_path):
    url = _fresh_url(backend, tmp_path)
    postgres = backend.name == "postgres"
    try:
        migrate.upgrade(url)
        tenant = set(TENANT_TABLES)
        if postgres:
            assert asyncio.run(_row_security(url)) == (tenant, tenant, True)
        command.downgrade(migrate.alembic_config(url), "0003_idempotency_keys")
        if postgres:
            assert asyncio.run(_row_security(url)) == (set(), set(), False)
        migrate.upgrade(url)
        if postgres:
            assert asyncio.run(_row_security(url)) == (tenant, tenant, True)
        database = Database(url, pool_size=1)
        assert asyncio.run(migrate.is_up_to_date(database, url)) is True
        asyncio.run(database.dispose())
    finally:
        if postgres:
            drop_postgres_database(url)


def _covering() -> dict[str, list[str]]:
    """The model's indexes that INCLUDE columns on PostgreSQL: name → included columns."""
    return {
        str(index.name): list(index.dialect_options["postgresql"]["include"])
        for table in Base.metadata.tables.values()
        for index in table.indexes
        if index.dialect_options["postgresql"]["include"]
    }


async def _included(url: str, names: list[str]) -> dict[str, list[str]]:
    """What each named index INCLUDEs in the database (alembic's comparison ignores it)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, array(SELECT a.attname FROM unnest(i.indkey[i.indnkeyatts:]) "
            "WITH ORDINALITY AS k(attnum, n) JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = k.attnum ORDER BY k.n) AS included "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = any($1)",
            names,
        )
    finally:
        await conn.close()
    return {r["relname"]: list(r["included"]) for r in rows}


def test_covering_indexes_include_what_the_models_say_and_migrate_back(backend, tmp_path):
    covering = _covering()
    values = ["value_number", "value_integer"]
    assert covering == {
        "ix_metric_values_by_metric_time": values,
        "ix_metric_current_values_by_metric": values,
    }
    url = _fresh_url(backend, tmp_path)
    postgres = backend.name == "postgres"
    try:
        migrate.upgrade(url)
        if postgres:
            assert asyncio.run(_included(url, list(covering))) == covering
        command.downgrade(migrate.alembic_config(url), "0005_current_value_indexes")
        if postgres:
            assert asyncio.run(_included(url, list(covering))) == {name: [] for name in covering}
        migrate.upgrade(url)
        _, diff, _, indexes = _inspect(url)
        assert diff == []
        assert ("metric_values", ("organization_id", "metric_ref", "observed_at")) in indexes
        by_metric = ("organization_id", "metric_ref", "customer_ref")
        assert ("metric_current_values", by_metric) in indexes
        if postgres:
            assert asyncio.run(_included(url, list(covering))) == covering
    finally:
        if postgres:
            drop_postgres_database(url)
