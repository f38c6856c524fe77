"""Every table. Tenant tables lead their primary key and unique constraints with
`organization_id`, so they can be distributed by organization on Citus unchanged;
`organizations` and `api_keys` are the admin plane (reference tables on Citus)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from customer_metrics.storage.types import (
    AutoId,
    BytewiseText,
    ExactDecimal,
    Json,
    MachineKey,
    UTCDateTime,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# Every row of these belongs to one organization: on PostgreSQL, row-level security shows a
# role that does not own them only the rows of the organization its transaction names.
TENANT_TABLES = (
    "counters",
    "metrics",
    "customers",
    "metric_values",
    "metric_current_values",
    "idempotency_keys",
    "metric_rollups",
    "metric_rollup_rows",
    "metric_rollup_dirty",
)


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    time_created: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("organizations.id", ondelete="CASCADE")
    )
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    time_created: Mapped[datetime] = mapped_column(UTCDateTime())
    time_revoked: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index(None, "organization_id", "id"),)


class Counter(Base):
    """Per-organization gapless counters (`metric` → METRIC-NNN), bumped in the inserting
    transaction so a rolled-back insert gives its number back."""

    __tablename__ = "counters"

    organization_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("organizations.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(32))
    value: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (PrimaryKeyConstraint("organization_id", "name"),)


class Metric(Base):
    __tablename__ = "metrics"

    organization_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("organizations.id", ondelete="CASCADE")
    )
    # Numbered per organization by the `metric` counter: METRIC-005 has id 5.
    id: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[str] = mapped_column(MachineKey)
    name: Mapped[str] = mapped_column(String(400))
    # NFKC + casefold of the name: what uniqueness compares.
    name_key: Mapped[str] = mapped_column(String(400))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    data_type: Mapped[str] = mapped_column(String(16))
    unit: Mapped[str | None] = mapped_column(String(128), nullable=True)
    allowed_values: Mapped[list[Any] | None] = mapped_column(Json, nullable=True)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    time_created: Mapped[datetime] = mapped_column(UTCDateTime())
    time_updated: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        PrimaryKeyConstraint("organization_id", "id"),
        UniqueConstraint("organization_id", "key"),
        UniqueConstraint("organization_id", "name_key"),
    )


class Customer(Base):
    __tablename__ = "customers"

    organization_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("organizations.id", ondelete="CASCADE")
    )
    # Numbered per organization by the `customer` counter.
    id: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[str] = mapped_column(String(1024))
    name: Mapped[str | None] = mapped_column(Text, nullable=True)
    email: Mapped[str | None] = mapped_column(Text, nullable=True)
    time_created: Mapped[datetime] = mapped_column(UTCDateTime())
    time_updated: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        PrimaryKeyConstraint("organization_id", "id"),
        UniqueConstraint("organization_id", "customer_id"),
    )


class _ObservationColumns:
    """What an observation holds: whose value of which metric, when, and the value in the one
    typed column its metric's data_type names."""

    organization_id: Mapped[int] = mapped_column(BigInteger)
    customer_ref: Mapped[int] = mapped_column(BigInteger)
    metric_ref: Mapped[int] = mapped_column(BigInteger)
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str | None] = mapped_column(String(400), nullable=True)
    value_number: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    value_integer: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    value_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    value_boolean: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    value_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    value_datetime: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


def _owners() -> tuple[ForeignKeyConstraint, ForeignKeyConstraint]:
    """Observations belong to a customer and a metric of the same organization."""
    return (
        ForeignKeyConstraint(
            ["organization_id", "customer_ref"],
            ["customers.organization_id", "customers.id"],
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["organization_id", "metric_ref"],
            ["metrics.organization_id", "metrics.id"],
            ondelete="CASCADE",
        ),
    )


class Observation(_ObservationColumns, Base):
    """Every value ever recorded: one row per customer, metric and observed_at."""

    __tablename__ = "metric_values"
    __table_args__ = (
        PrimaryKeyConstraint("organization_id", "customer_ref", "metric_ref", "observed_at"),
        *_owners(),
        # Series over every customer read a metric's observations in a time range: the
        # numeric values ride along in the index (PostgreSQL; SQLite has no INCLUDE), so
        # summing them reads no table rows.
        Index(
            "ix_metric_values_by_metric_time",
            "organization_id",
            "metric_ref",
            "observed_at",
            postgresql_include=["value_number", "value_integer"],
        ),
    )


_TYPED_COLUMNS = (
    "value_number",
    "value_integer",
    "value_text",
    "value_boolean",
    "value_date",
    "value_datetime",
)


def _by_value() -> list[Index]:
    """One index per typed column, holding only the rows of that type: a search filtered or
    sorted by a metric reads its customers in value order (then by customer, the tie-break)."""
    return [
        Index(
            f"ix_metric_current_values_by_{column}",
            "organization_id",
            "metric_ref",
            column,
            "customer_ref",
            postgresql_where=text(f"{column} IS NOT NULL"),
            sqlite_where=text(f"{column} IS NOT NULL"),
        )
        for column in _TYPED_COLUMNS
    ]


class CurrentValue(_ObservationColumns, Base):
    """The latest observation per customer and metric, kept in the writing transaction so
    reads of current values never scan history."""

    __tablename__ = "metric_current_values"
    # Searches compare and sort text by code point, which an index serves only when the
    # column itself is collated that way.
    value_text: Mapped[str | None] = mapped_column(BytewiseText, nullable=True)
    __table_args__ = (
        PrimaryKeyConstraint("organization_id", "customer_ref", "metric_ref"),
        *_owners(),
        # The numeric values ride along (PostgreSQL): a summary counts and sums a metric's
        # current values from this index, in customer order, near the table's own order.
        Index(
            "ix_metric_current_values_by_metric",
            "organization_id",
            "metric_ref",
            "customer_ref",
            postgresql_include=["value_number", "value_integer"],
        ),
        *_by_value(),
    )


def _metric_owner() -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["organization_id", "metric_ref"],
        ["metrics.organization_id", "metrics.id"],
        ondelete="CASCADE",
    )


class Rollup(Base):
    """Per metric and 15-minute period (UTC): totals of the observations (`obs_*`) and of
    each customer's change of value (`snap_*`: first values count 1, changes add the
    difference from the previous value), as of the rows in `metric_rollup_rows`. Written only
    by the fold (queries/rollup_repository.py), never by a value write."""

    __tablename__ = "metric_rollups"

    organization_id: Mapped[int] = mapped_column(BigInteger)
    metric_ref: Mapped[int] = mapped_column(BigInteger)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    obs_count: Mapped[int] = mapped_column(BigInteger)
    obs_sum: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)
    snap_count: Mapped[int] = mapped_column(BigInteger)
    snap_sum: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)

    __table_args__ = (
        PrimaryKeyConstraint("organization_id", "metric_ref", "period_start"),
        _metric_owner(),
    )


class RollupRow(Base):
    """The observations as `metric_rollups` counts them: for a customer and metric not in
    `metric_rollup_dirty`, exactly its rows in `metric_values`. No foreign key to customers:
    an erased customer's rows stay until the fold takes them out of the totals."""

    __tablename__ = "metric_rollup_rows"

    organization_id: Mapped[int] = mapped_column(BigInteger)
    metric_ref: Mapped[int] = mapped_column(BigInteger)
    customer_ref: Mapped[int] = mapped_column(BigInteger)
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # NUMBER and INTEGER values (exact); NULL for the other types, whose totals only count.
    value: Mapped[Decimal | None] = mapped_column(ExactDecimal(), nullable=True)

    __table_args__ = (
        PrimaryKeyConstraint("organization_id", "metric_ref", "customer_ref", "observed_at"),
        _metric_owner(),
    )


class RollupDirty(Base):
    """Customers whose observations of a metric changed at or after `since` and are not
    folded into the rollup yet: one row per customer and metric, written by every change of
    observations in the same transaction (no row shared by different customers)."""

    __tablename__ = "metric_rollup_dirty"

    organization_id: Mapped[int] = mapped_column(BigInteger)
    metric_ref: Mapped[int] = mapped_column(BigInteger)
    customer_ref: Mapped[int] = mapped_column(BigInteger)
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    # Bumped by every mark: a fold removes the mark only if no write marked it again since
    # the fold read it, so it never holds marks (and their writers) while it works.
    version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    __table_args__ = (
        PrimaryKeyConstraint("organization_id", "metric_ref", "customer_ref"),
        _metric_owner(),
    )


class IdempotencyKey(Base):
    """The first completed response to a request sent with an `Idempotency-Key`, replayed for
    repeats; `in_progress` while the first request runs."""

    __tablename__ = "idempotency_keys"

    organization_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("organizations.id", ondelete="CASCADE")
    )
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_headers: Mapped[dict[str, str] | None] = mapped_column(Json, nullable=True)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    time_created: Mapped[datetime] = mapped_column(UTCDateTime())
    time_expires: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (PrimaryKeyConstraint("organization_id", "key"),)


def table_of(model: type[Base]) -> Table:
    """A model's Core table, typed for insert/update/delete statements."""
    table = model.__table__
    assert isinstance(table, Table)
    return table
