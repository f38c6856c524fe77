"""numeric values INCLUDEd in two indexes (PostgreSQL), for index-only aggregates

Revision ID: 0006_covering_indexes
Revises: 0005_current_value_indexes
Create Date: 2026-11-26

Two reads aggregate a numeric metric over every customer, and each read its values from the
table one row at a time, in an order unrelated to the table's:
- a series sums the observations in a time range, found by metric_values'
  (organization_id, metric_ref, observed_at) index;
- a summary counts and sums the current values, found by metric_current_values'
  (organization_id, metric_ref, customer_ref) index.
With `value_number` and `value_integer` INCLUDEd, both are computed from the index alone
(index-only scans). A write still adds one entry to each index, a few bytes wider (a current
value's update already added one: its value columns are indexed, so it is never a HOT update).

PostgreSQL only: SQLite has no INCLUDE, and its indexes stay as they are. Each new index is
built under another name, then replaces the old one; writes to the table wait while it is
built (about 40 s per 20 million observations, 20 s per 10 million current values, on 2 cores).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_covering_indexes"
down_revision: str | None = "0005_current_value_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("metric_values", "ix_metric_values_by_metric_time", ["observed_at"]),
    ("metric_current_values", "ix_metric_current_values_by_metric", ["customer_ref"]),
)
VALUES = ["value_number", "value_integer"]


def _rebuild(include: list[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, name, last in INDEXES:
        key = ["organization_id", "metric_ref", *last]
        op.create_index(f"{name}_new", table, key, postgresql_include=include)
        op.drop_index(name, table_name=table)
        op.execute(f"ALTER INDEX {name}_new RENAME TO {name}")


def upgrade() -> None:
    _rebuild(VALUES)


def downgrade() -> None:
    _rebuild([])
