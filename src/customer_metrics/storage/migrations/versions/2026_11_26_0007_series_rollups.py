"""per-metric rollups of observations and snapshots, folded from changed customers

Revision ID: 0007_series_rollups
Revises: 0006_covering_indexes
Create Date: 2026-11-26

Series over every customer read per-15-minute totals (`metric_rollups`) instead of the whole
history. Value writes touch no shared row: each marks its customer and metric in
`metric_rollup_dirty`; a fold (queries/rollup_repository.py) later moves those customers'
changes into the totals, keeping `metric_rollup_rows` (the observations as the totals count
them) in step, and reads add the not yet folded changes themselves.

Existing observations: on PostgreSQL the rows and totals are computed here, set-based (about
a few minutes per 20 million observations on 2 cores); on SQLite every customer and metric
with observations is marked, and the first folds compute them.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from customer_metrics.storage.types import ExactDecimal, UTCDateTime

revision: str = "0007_series_rollups"
down_revision: str | None = "0006_covering_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("metric_rollups", "metric_rollup_rows", "metric_rollup_dirty")
POLICY = "tenant_isolation"
TENANT = "NULLIF(current_setting('cm.organization_id', true), '')::bigint"
KEY = ("organization_id", "metric_ref")
MARKED = "cm_rollup_marked_organizations"

_PERIOD = "to_timestamp(floor(extract(epoch FROM observed_at) / 900) * 900)"
_ROWS = """
INSERT INTO metric_rollup_rows (organization_id, metric_ref, customer_ref, observed_at, value)
SELECT organization_id, metric_ref, customer_ref, observed_at,
       coalesce(value_number, value_integer::numeric)
FROM metric_values
"""
_TOTALS = f"""
INSERT INTO metric_rollups
    (organization_id, metric_ref, period_start, obs_count, obs_sum, snap_count, snap_sum)
SELECT organization_id, metric_ref, {_PERIOD}, count(*), sum(value),
       sum(CASE WHEN previous_at IS NULL THEN 1 ELSE 0 END),
       sum(value - coalesce(previous, 0))
FROM (
    SELECT organization_id, metric_ref, observed_at, value,
           lag(value) OVER pair AS previous,
           lag(observed_at) OVER pair AS previous_at
    FROM metric_rollup_rows
    WINDOW pair AS (PARTITION BY organization_id, metric_ref, customer_ref ORDER BY observed_at)
) AS rows
GROUP BY organization_id, metric_ref, {_PERIOD}
"""  # noqa: S608 (the one interpolation is this module's constant)
_MARK_ALL = """
INSERT INTO metric_rollup_dirty (organization_id, metric_ref, customer_ref, since, version)
SELECT organization_id, metric_ref, customer_ref, min(observed_at), 0
FROM metric_values
GROUP BY organization_id, metric_ref, customer_ref
"""


def _owner(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        list(KEY),
        ["metrics.organization_id", "metrics.id"],
        name=op.f(f"fk_{table}_organization_id_metrics"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "metric_rollups",
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("metric_ref", sa.BigInteger(), nullable=False),
        sa.Column("period_start", UTCDateTime(), nullable=False),
        sa.Column("obs_count", sa.BigInteger(), nullable=False),
        sa.Column("obs_sum", ExactDecimal(), nullable=True),
        sa.Column("snap_count", sa.BigInteger(), nullable=False),
        sa.Column("snap_sum", ExactDecimal(), nullable=True),
        _owner("metric_rollups"),
        sa.PrimaryKeyConstraint(*KEY, "period_start", name=op.f("pk_metric_rollups")),
    )
    for table, last in (("metric_rollup_rows", "observed_at"), ("metric_rollup_dirty", "since")):
        value: list[sa.Column[Any]] = (
            [sa.Column("value", ExactDecimal(), nullable=True)]
            if last == "observed_at"
            else [
                sa.Column("version", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
            ]
        )
        key = [*KEY, "customer_ref"] + (["observed_at"] if last == "observed_at" else [])
        op.create_table(
            table,
            sa.Column("organization_id", sa.BigInteger(), nullable=False),
            sa.Column("metric_ref", sa.BigInteger(), nullable=False),
            sa.Column("customer_ref", sa.BigInteger(), nullable=False),
            sa.Column(last, UTCDateTime(), nullable=False),
            *value,
            _owner(table),
            sa.PrimaryKeyConstraint(*key, name=op.f(f"pk_{table}")),
        )
    if op.get_bind().dialect.name != "postgresql":
        op.execute(_MARK_ALL)
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {POLICY} ON {table} "
            f"USING (organization_id = {TENANT}) WITH CHECK (organization_id = {TENANT})"
        )
    # The background fold finds the organizations with marked customers through the owner
    # (row-level security hides other organizations' marks); it returns ids, nothing more.
    op.execute(f"""
        CREATE FUNCTION {MARKED}() RETURNS SETOF bigint
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = {_schema()}, pg_temp
        AS $$ SELECT DISTINCT organization_id FROM metric_rollup_dirty $$
    """)  # noqa: S608 (the module's constant and the quoted schema)
    op.execute(f"REVOKE ALL ON FUNCTION {MARKED}() FROM PUBLIC")
    op.execute(_ROWS)
    op.execute(_TOTALS)
    op.execute("ANALYZE metric_rollup_rows")
    op.execute("ANALYZE metric_rollups")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION {MARKED}()")
    for table in reversed(TABLES):
        op.drop_table(table)


def _schema() -> str:
    """The schema the tables were created in, quoted."""
    bind = op.get_bind()
    name = bind.exec_driver_sql("SELECT current_schema()").scalar_one()
    return str(bind.dialect.identifier_preparer.quote_schema(name))
