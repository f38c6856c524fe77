"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Integer, Numeric, String, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import TypeDecorator

# SQLite only autoincrements a column declared exactly `INTEGER PRIMARY KEY`.
AutoId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")
# Machine keys compared by code point: on PostgreSQL the "C" collation also lets a
# `LIKE 'prefix%'` use the index (the locale's collation cannot).
MachineKey = String(64).with_variant(String(64, collation="C"), "postgresql")
# Text that sorts by code point, as queries compare it (`dialect.bytewise`): on PostgreSQL
# the column's collation must be "C" for an index on it to serve those comparisons.
BytewiseText = Text().with_variant(Text(collation="C"), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns an aware UTC datetime (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached storage")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        # asyncpg already returns timestamptz as an aware UTC datetime: no per-row call.
        if dialect.name == "postgresql":
            return None
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL on SQLite bypasses the DateTime result processor
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """Exact decimals: NUMERIC on PostgreSQL; canonical text on SQLite, whose NUMERIC affinity
    would turn `0.1` into a binary float."""

    impl = Numeric(asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Text())
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return format(value, "f")

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        # asyncpg already returns NUMERIC as Decimal: no per-row call.
        if dialect.name == "postgresql":
            return None
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


class NativeArray(ARRAY[Any]):
    """A PostgreSQL array parameter handed to asyncpg as a Python list: asyncpg encodes it
    itself, so no per-item conversion runs in Python."""

    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None
