"""Aggregates over every customer's current (or as-of) value of one metric."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from customer_metrics.storage import dialect
from customer_metrics.storage.database import Session
from customer_metrics.storage.models import CurrentValue, Observation, table_of
from customer_metrics.tenancy import Tenant
from customer_metrics.values.typed import COLUMN_OF

_cur = table_of(CurrentValue)
_obs = table_of(Observation)
TOP_VALUES = 50


class SummaryRepository:
    def __init__(self, session: Session, tenant: Tenant) -> None:
        self._conn = session.connection
        self._org = tenant.organization_id
        self._dialect = self._conn.dialect.name

    def _values(self, metric_ref: int, data_type: str, as_of: datetime | None) -> Any:
        """One row per customer: that customer's value at `as_of` (or now)."""
        column = COLUMN_OF[data_type]
        if as_of is None:
            return (
                select(_cur.c[column].label("value"))
                .where(_cur.c.organization_id == self._org, _cur.c.metric_ref == metric_ref)
                .subquery("vals")
            )
        older = _obs.alias("older")
        latest = (
            select(func.max(older.c.observed_at))
            .where(
                older.c.organization_id == _obs.c.organization_id,
                older.c.customer_ref == _obs.c.customer_ref,
                older.c.metric_ref == _obs.c.metric_ref,
                older.c.observed_at <= as_of,
            )
            .scalar_subquery()
        )
        return (
            select(_obs.c[column].label("value"))
            .where(
                _obs.c.organization_id == self._org,
                _obs.c.metric_ref == metric_ref,
                _obs.c.observed_at == latest,
            )
            .subquery("vals")
        )

    async def count(self, metric_ref: int, data_type: str, as_of: datetime | None) -> int:
        values = self._values(metric_ref, data_type, as_of)
        stmt = select(func.count()).select_from(values).where(values.c.value.is_not(None))
        return int((await self._conn.execute(stmt)).scalar_one())

    async def exact_sum(self, metric_ref: int, data_type: str, as_of: datetime | None) -> Decimal:
        values = self._values(metric_ref, data_type, as_of)
        if self._dialect == "sqlite" and data_type == "NUMBER":
            # SQLite has no exact decimal arithmetic: add the stored text exactly here.
            total = Decimal(0)
            result = await self._conn.stream(select(values.c.value))
            async for (value,) in result:
                total += value
            return total
        stmt = select(func.coalesce(func.sum(values.c.value), 0))
        return Decimal((await self._conn.execute(stmt)).scalar_one())

    async def at_ranks(
        self, metric_ref: int, data_type: str, as_of: datetime | None, ranks: list[int]
    ) -> dict[int, Any]:
        """The values at the given 0-based ranks in ascending order (one sort)."""
        values = self._values(metric_ref, data_type, as_of)
        ordering = values.c.value
        if data_type == "NUMBER":
            ordering = dialect.comparable_number(values.c.value, self._dialect)
        ranked = (
            select(
                values.c.value,
                (func.row_number().over(order_by=ordering) - 1).label("rank"),
            )
            .where(values.c.value.is_not(None))
            .subquery("ranked")
        )
        stmt = select(ranked.c.rank, ranked.c.value).where(ranked.c.rank.in_(sorted(set(ranks))))
        return {int(rank): value for rank, value in await self._conn.execute(stmt)}

    async def min_max(
        self, metric_ref: int, data_type: str, as_of: datetime | None
    ) -> tuple[Any, Any]:
        values = self._values(metric_ref, data_type, as_of)
        stmt = select(func.min(values.c.value), func.max(values.c.value))
        low, high = (await self._conn.execute(stmt)).one()
        return low, high

    async def top_values(
        self, metric_ref: int, data_type: str, as_of: datetime | None
    ) -> list[tuple[Any, int]]:
        values = self._values(metric_ref, data_type, as_of)
        counted = func.count().label("n")
        tie_break = values.c.value
        if data_type == "STRING":
            tie_break = dialect.bytewise(values.c.value, self._dialect)
        stmt = (
            select(values.c.value, counted)
            .where(values.c.value.is_not(None))
            .group_by(values.c.value)
            .order_by(counted.desc(), tie_break.asc())
            .limit(TOP_VALUES)
        )
        return [(value, int(n)) for value, n in await self._conn.execute(stmt)]
