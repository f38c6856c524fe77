"""customers and metric values

Revision ID: 0002_customers_values
Revises: 0001_foundation
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from customer_metrics.storage.types import ExactDecimal, UTCDateTime

revision: str = "0002_customers_values"
down_revision: str | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.String(length=1024), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("time_created", UTCDateTime(), nullable=False),
        sa.Column("time_updated", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_customers_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", "id", name=op.f("pk_customers")),
        sa.UniqueConstraint(
            "organization_id", "customer_id", name=op.f("uq_customers_organization_id_customer_id")
        ),
    )
    op.create_table(
        "metric_current_values",
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_ref", sa.BigInteger(), nullable=False),
        sa.Column("metric_ref", sa.BigInteger(), nullable=False),
        sa.Column("observed_at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=400), nullable=True),
        sa.Column("value_number", ExactDecimal(), nullable=True),
        sa.Column("value_integer", sa.BigInteger(), nullable=True),
        sa.Column("value_text", sa.Text(), nullable=True),
        sa.Column("value_boolean", sa.Boolean(), nullable=True),
        sa.Column("value_date", sa.Date(), nullable=True),
        sa.Column("value_datetime", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id", "customer_ref"],
            ["customers.organization_id", "customers.id"],
            name=op.f("fk_metric_current_values_organization_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "metric_ref"],
            ["metrics.organization_id", "metrics.id"],
            name=op.f("fk_metric_current_values_organization_id_metrics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "customer_ref", "metric_ref", name=op.f("pk_metric_current_values")
        ),
    )
    op.create_index(
        "ix_metric_current_values_by_metric",
        "metric_current_values",
        ["organization_id", "metric_ref", "customer_ref"],
    )

    op.create_table(
        "metric_values",
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_ref", sa.BigInteger(), nullable=False),
        sa.Column("metric_ref", sa.BigInteger(), nullable=False),
        sa.Column("observed_at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=400), nullable=True),
        sa.Column("value_number", ExactDecimal(), nullable=True),
        sa.Column("value_integer", sa.BigInteger(), nullable=True),
        sa.Column("value_text", sa.Text(), nullable=True),
        sa.Column("value_boolean", sa.Boolean(), nullable=True),
        sa.Column("value_date", sa.Date(), nullable=True),
        sa.Column("value_datetime", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id", "customer_ref"],
            ["customers.organization_id", "customers.id"],
            name=op.f("fk_metric_values_organization_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id", "metric_ref"],
            ["metrics.organization_id", "metrics.id"],
            name=op.f("fk_metric_values_organization_id_metrics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id",
            "customer_ref",
            "metric_ref",
            "observed_at",
            name=op.f("pk_metric_values"),
        ),
    )
    op.create_index(
        "ix_metric_values_by_metric_time",
        "metric_values",
        ["organization_id", "metric_ref", "observed_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_metric_values_by_metric_time", table_name="metric_values")

    op.drop_table("metric_values")
    op.drop_index(
        "ix_metric_current_values_by_metric",
        table_name="metric_current_values",
    )

    op.drop_table("metric_current_values")
    op.drop_table("customers")
