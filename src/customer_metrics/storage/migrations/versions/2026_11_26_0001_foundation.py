"""foundation: organizations, api keys, counters, metric definitions

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from customer_metrics.storage.types import AutoId, Json, MachineKey, UTCDateTime

revision: str = "0001_foundation"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("time_created", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_organizations"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("time_created", UTCDateTime(), nullable=False),
        sa.Column("time_revoked", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_api_keys_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_organization_id_id", "api_keys", ["organization_id", "id"])
    op.create_table(
        "counters",
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "name", name="pk_counters"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_counters_organization_id_organizations",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "metrics",
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("key", MachineKey, nullable=False),
        sa.Column("name", sa.String(400), nullable=False),
        sa.Column("name_key", sa.String(400), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("data_type", sa.String(16), nullable=False),
        sa.Column("unit", sa.String(128), nullable=True),
        sa.Column("allowed_values", Json, nullable=True),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("time_created", UTCDateTime(), nullable=False),
        sa.Column("time_updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "id", name="pk_metrics"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_metrics_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("organization_id", "key", name="uq_metrics_organization_id_key"),
        sa.UniqueConstraint(
            "organization_id", "name_key", name="uq_metrics_organization_id_name_key"
        ),
    )


def downgrade() -> None:
    op.drop_table("metrics")
    op.drop_table("counters")
    op.drop_index("ix_api_keys_organization_id_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("organizations")
