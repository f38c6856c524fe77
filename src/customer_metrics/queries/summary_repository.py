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

    async def _read(self, stmt: Any) -> Any:
        # Each statement reads up to every customer's value of the metric.
        return await self._conn.execute(dialect.analytic(stmt))

    def _values(self, metric_ref: int, data_type: str, as_of: datetime | None) -> Any:
        """One row per customer with a value: that customer's value at `as_of` (or now)."""
        column = COLUMN_OF[data_type]
        if as_of is None:
            # IS NOT NULL: the value index of this type holds exactly those rows, and serves
            # counting, summing and ranking without reading the table.
            return (
                select(_cur.c[column].label("value"))
                .where(
                    _cur.c.organization_id == self._org,
                    _cur.c.metric_ref == metric_ref,
                    _cur.c[column].is_not(None),
                )
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
                _obs.c[column].is_not(None),
            )
            .subquery("vals")
        )

    async def count(self, metric_ref: int, data_type: str, as_of: datetime | None) -> int:
        values = self._values(metric_ref, data_type, as_of)
        stmt = select(func.count()).select_from(values)
        return int((await self._read(stmt)).scalar_one())

    async def totals(
        self, metric_ref: int, data_type: str, as_of: datetime | None
    ) -> tuple[int, Decimal]:
        """How many customers have a value, and the exact sum of those values (one pass)."""
        values = self._values(metric_ref, data_type, as_of)
        if self._dialect == "sqlite":
            # SQLite has no exact decimal arithmetic, and its sum() of integers fails past
            # 64 bits: add the values exactly here.
            count, total = 0, Decimal(0)
            result = await self._conn.stream(select(values.c.value))
            async for (value,) in result:
                count += 1
                total += value
            return count, total
        if as_of is None:
            stmt = self._current_totals(metric_ref, data_type)
        else:
            stmt = select(func.count(), func.coalesce(func.sum(values.c.value), 0))
        count, total = (await self._read(stmt)).one()
        return int(count), Decimal(total)

    def _current_totals(self, metric_ref: int, data_type: str) -> Any:
        """Count and sum of the current values, from the metric's index in customer order
        (it INCLUDEs the numeric values on PostgreSQL): nearer the table's own order than the
        value index, so an index-only scan checks the visibility map's pages in turn instead
        of jumping between them for every value. No `IS NOT NULL` condition, which would
        pick the partial value index: count() and sum() skip nulls themselves."""
        value = _cur.c[COLUMN_OF[data_type]]
        return select(func.count(value), func.coalesce(func.sum(value), 0)).where(
            _cur.c.organization_id == self._org, _cur.c.metric_ref == metric_ref
        )

    def _ordering(self, values: Any, data_type: str) -> Any:
        if data_type == "NUMBER":
            return dialect.comparable_number(values.c.value, self._dialect)
        return values.c.value

    async def at_ranks(
        self, metric_ref: int, data_type: str, as_of: datetime | None, ranks: list[int], count: int
    ) -> dict[int, Any]:
        """The values at the given 0-based ranks in ascending order, of `count` values (a run
        of ranks that is not all there, the values having changed since they were counted,
        is left out).

        Current values are read in index order, skipping to each run of adjacent ranks from
        the nearer end (so the median costs half a pass and the top percentiles little);
        values as of a past instant have no index, so they are sorted once and numbered."""
        if as_of is not None:
            return await self._numbered(metric_ref, data_type, as_of, ranks)
        found: dict[int, Any] = {}
        for first, last in _runs(sorted(set(ranks))):
            values = self._values(metric_ref, data_type, None)
            ordering = self._ordering(values, data_type)
            from_top = count - 1 - last < first
            stmt = (
                select(values.c.value)
                .order_by(ordering.desc() if from_top else ordering.asc())
                .offset(count - 1 - last if from_top else first)
                .limit(last - first + 1)
            )
            got = [value for (value,) in await self._read(stmt)]
            if len(got) < last - first + 1:
                continue  # fewer values than `count` now: these ranks are not there
            if from_top:
                got.reverse()
            found.update(zip(range(first, last + 1), got, strict=True))
        return found

    async def _numbered(
        self, metric_ref: int, data_type: str, as_of: datetime, ranks: list[int]
    ) -> dict[int, Any]:
        values = self._values(metric_ref, data_type, as_of)
        ranked = select(
            values.c.value,
            (func.row_number().over(order_by=self._ordering(values, data_type)) - 1).label("rank"),
        ).subquery("ranked")
        stmt = select(ranked.c.rank, ranked.c.value).where(ranked.c.rank.in_(sorted(set(ranks))))
        return {int(rank): value for rank, value in await self._read(stmt)}

    async def min_max(
        self, metric_ref: int, data_type: str, as_of: datetime | None
    ) -> tuple[Any, Any]:
        values = self._values(metric_ref, data_type, as_of)
        stmt = select(func.min(values.c.value), func.max(values.c.value))
        low, high = (await self._read(stmt)).one()
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
            .group_by(values.c.value)
            .order_by(counted.desc(), tie_break.asc())
            .limit(TOP_VALUES)
        )
        return [(value, int(n)) for value, n in await self._read(stmt)]


def _runs(ranks: list[int]) -> list[tuple[int, int]]:
    """Sorted ranks as (first, last) runs of adjacent ones: [0, 4, 5, 9] → (0,0) (4,5) (9,9)."""
    runs: list[tuple[int, int]] = []
    for rank in ranks:
        if runs and runs[-1][1] + 1 == rank:
            runs[-1] = (runs[-1][0], rank)
        else:
            runs.append((rank, rank))
    return runs
