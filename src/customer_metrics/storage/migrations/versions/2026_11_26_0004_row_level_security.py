"""row-level security on tenant tables (PostgreSQL; nothing on SQLite)

Every tenant table shows a role that does not own it only the rows of the organization named
by the transaction-local setting `cm.organization_id`; with no setting it shows and accepts
nothing. `organizations` and `api_keys` (the admin plane, and the key lookup that finds the
tenant) have no policy. The expiry purge of idempotency keys, the one statement that crosses
tenants, runs through a function the owner defines (SECURITY DEFINER) and that can delete
nothing but expired keys.

Revision ID: 0004_row_level_security
Revises: 0003_idempotency_keys
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004_row_level_security"
down_revision: str | None = "0003_idempotency_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = (
    "counters",
    "metrics",
    "customers",
    "metric_values",
    "metric_current_values",
    "idempotency_keys",
)
POLICY = "tenant_isolation"
# NULLIF: once a transaction-local setting has been used on a connection, later transactions
# there read it as '' rather than NULL, and ''::bigint would be an error, not "no rows".
TENANT = "NULLIF(current_setting('cm.organization_id', true), '')::bigint"
PURGE = "cm_purge_expired_idempotency_keys"


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _is_postgres():
        return
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {POLICY} ON {table} "
            f"USING (organization_id = {TENANT}) WITH CHECK (organization_id = {TENANT})"
        )
    # Runs as its owner (who bypasses the policies): bounded by the database's clock as well as
    # the caller's, so no caller can delete a key before it has expired. A fixed search_path
    # with pg_temp last, so no temporary table can stand in for ours.
    op.execute(f"""
        CREATE FUNCTION {PURGE}(expired_before timestamptz, batch integer) RETURNS integer
        LANGUAGE sql SECURITY DEFINER
        SET search_path = {_schema()}, pg_temp
        AS $$
            WITH expired AS (
                SELECT organization_id, key FROM idempotency_keys
                WHERE time_expires < least(expired_before, now())
                LIMIT batch
            ), deleted AS (
                DELETE FROM idempotency_keys AS k USING expired AS e
                WHERE k.organization_id = e.organization_id AND k.key = e.key
                RETURNING 1
            )
            SELECT count(*)::integer FROM deleted
        $$
    """)  # noqa: S608 (names are this module's constants and the quoted schema)
    op.execute(f"REVOKE ALL ON FUNCTION {PURGE}(timestamptz, integer) FROM PUBLIC")


def downgrade() -> None:
    if not _is_postgres():
        return
    op.execute(f"DROP FUNCTION {PURGE}(timestamptz, integer)")
    for table in TENANT_TABLES:
        op.execute(f"DROP POLICY {POLICY} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")


def _schema() -> str:
    """The schema the tables were created in, quoted."""
    bind = op.get_bind()
    name = bind.exec_driver_sql("SELECT current_schema()").scalar_one()
    return str(bind.dialect.identifier_preparer.quote_schema(name))
