"""metric values: the time index carries the numeric values (PostgreSQL)

Revision ID: 0006_time_index_values
Revises: 0005_current_value_indexes
Create Date: 2026-11-26

A series over every customer aggregates a metric's observations in a time range. The index on
(organization_id, metric_ref, observed_at) finds them, but each value was then read from the
table, one row at a time in time order (random places in the table). With `value_number` and
`value_integer` INCLUDEd the sums, minimums and maximums are computed from the index alone
(an index-only scan). A write still adds one entry to the index, a few bytes wider.

PostgreSQL only: SQLite has no INCLUDE, and its index stays as it is. The new index is built
under another name, then replaces the old one; writes to metric_values wait while it is built
(about 40 s per 20 million observations on 2 cores).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_time_index_values"
down_revision: str | None = "0005_current_value_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_metric_values_by_metric_time"
KEY = ["organization_id", "metric_ref", "observed_at"]


def _rebuild(include: list[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index(f"{NAME}_new", "metric_values", KEY, postgresql_include=include)
    op.drop_index(NAME, table_name="metric_values")
    op.execute(f"ALTER INDEX {NAME}_new RENAME TO {NAME}")


def upgrade() -> None:
    _rebuild(["value_number", "value_integer"])


def downgrade() -> None:
    _rebuild([])
