"""The role the service connects as on PostgreSQL: created and granted by the tables' owner
(`customer-metrics migrate --app-role NAME`), never owning them, so row-level security
applies to it."""

from __future__ import annotations

import asyncpg

from customer_metrics.storage import dialect
from customer_metrics.storage.models import TENANT_TABLES


class RoleError(Exception):
    """The app role cannot be set up as asked (a role that would bypass row security)."""


_ROLE = "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1"
# Whether `role` has the privileges of the owner of any tenant table (an owner is not held
# to the policies unless the table FORCEs them).
_OWNS = """
SELECT coalesce(bool_or(pg_has_role($1, c.relowner, 'USAGE')), false)
FROM pg_class AS c
WHERE c.oid = ANY (SELECT to_regclass(name) FROM unnest($2::text[]) AS name)
"""
_FUNCTIONS = """
SELECT p.oid::regprocedure::text
FROM pg_proc AS p
WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
  AND p.proname LIKE 'cm\\_%'
"""
# Table and sequence rights on what exists now and, through default privileges, on what
# later migrations (run by the same owner) create. The migration table is readable, so that
# `serve` and /readyz can check the schema is current, and not writable.
_GRANTS = (
    "GRANT USAGE ON SCHEMA %1$I TO %2$I",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %1$I TO %2$I",
    "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON %1$I.alembic_version FROM %2$I",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %1$I TO %2$I",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA %1$I GRANT SELECT, INSERT, UPDATE, DELETE "
    "ON TABLES TO %2$I",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA %1$I GRANT USAGE, SELECT ON SEQUENCES TO %2$I",
)


def has_roles(url: str) -> bool:
    return not dialect.is_sqlite(dialect.async_url(url))


async def grant_app_role(url: str, role: str, password: str | None = None) -> bool:
    """Creates `role` (LOGIN) when missing, sets its password when one is given, and grants it
    what the service needs on the current schema. Returns whether the role was created.
    Refuses a role that row-level security would not hold: a superuser, a BYPASSRLS role, or
    one with the privileges of the tables' owner."""
    connection = await asyncpg.connect(dialect.native_dsn(dialect.async_url(url)))
    try:
        async with connection.transaction():
            found = await connection.fetchrow(_ROLE, role)
            if found is not None and (found["rolsuper"] or found["rolbypassrls"]):
                raise RoleError(f"role {role!r} bypasses row-level security (superuser/BYPASSRLS)")
            if found is None:
                await _run(connection, "CREATE ROLE %I LOGIN", role)
            elif await connection.fetchval(_OWNS, role, list(TENANT_TABLES)):
                raise RoleError(f"role {role!r} owns the tables (or is a member of their owner)")
            if password is not None:
                await _run(connection, "ALTER ROLE %I PASSWORD %L", role, password)
            schema = await connection.fetchval("SELECT current_schema()")
            for grant in _GRANTS:
                await _run(connection, grant, schema, role)
            for (function,) in await connection.fetch(_FUNCTIONS):
                # regprocedure's text is the function's quoted name and argument types.
                await _run(connection, "GRANT EXECUTE ON FUNCTION %s TO %I", function, role)
    finally:
        await connection.close()
    return found is None


async def _run(connection: asyncpg.Connection, template: str, *args: str) -> None:
    """A utility statement (no bind parameters there) with its names and literals quoted by
    the server's own `format`."""
    sql = await connection.fetchval("SELECT format($1, VARIADIC $2::text[])", template, list(args))
    await connection.execute(sql)
