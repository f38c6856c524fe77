"""Per-bucket aggregates of one metric: over the observations inside each bucket, or over
every customer's value as of each bucket's end.

Both read the metric's observations once, each labelled with its bucket by a binary search
over the bucket bounds (`dialect.bucket_index`), however many buckets there are. Over every
customer they are analytic reads (`dialect.analytic`), and the observations inside the range
are read in parts (`dialect.time_parts`) that PostgreSQL scans and aggregates in parallel."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Numeric, case, cast, func, select, union_all

from customer_metrics.queries.buckets import Bucket
from customer_metrics.storage import dialect
from customer_metrics.storage.database import Session
from customer_metrics.storage.models import Observation, table_of
from customer_metrics.tenancy import Tenant
from customer_metrics.values.typed import COLUMN_OF

_obs = table_of(Observation)


class SeriesRepository:
    def __init__(self, session: Session, tenant: Tenant) -> None:
        self._conn = session.connection
        self._org = tenant.organization_id
        self._dialect = self._conn.dialect.name

    async def _read(self, stmt: Any, customer_ref: int | None) -> Any:
        # Plans hinge on the parameters (which metric, how many of its rows a range holds).
        # One customer's rows are few: planning them as a large read would cost more than it
        # saves.
        if customer_ref is None:
            return await self._conn.execute(dialect.analytic(stmt))
        return await self._conn.execute(dialect.planned_each_time(stmt))

    @property
    def exact_in_sql(self) -> bool:
        """Whether SQL sums NUMBER and INTEGER values exactly here (SQLite stores NUMBER as
        text, and its sum() of integers fails past 64 bits)."""
        return self._dialect != "sqlite"

    def _scope(self, metric_ref: int, customer_ref: int | None) -> list[Any]:
        conditions = [_obs.c.organization_id == self._org, _obs.c.metric_ref == metric_ref]
        if customer_ref is not None:
            conditions.append(_obs.c.customer_ref == customer_ref)
        return conditions

    def _bucket(self, spans: list[Bucket]) -> Any:
        bounds = [b.start for b in spans] + [spans[-1].end]
        return dialect.bucket_index(_obs.c.observed_at, bounds, self._dialect).label("idx")

    def _inside(
        self, metric_ref: int, data_type: str, spans: list[Bucket], customer_ref: int | None
    ) -> Any:
        """(idx, value) of every observation inside [first start, last end): over every
        customer, a UNION ALL of the observations of consecutive parts of the range."""
        parts = 1 if customer_ref is not None else dialect.time_parts(self._dialect)
        selects = [
            select(self._bucket(spans), _obs.c[COLUMN_OF[data_type]].label("value")).where(
                *self._scope(metric_ref, customer_ref),
                _obs.c.observed_at >= start,
                _obs.c.observed_at < end,
            )
            for start, end in _parts(spans, parts)
        ]
        if len(selects) == 1:
            return selects[0].subquery("inside")
        return union_all(*selects).subquery("inside")

    async def aggregate(
        self,
        metric_ref: int,
        data_type: str,
        spans: list[Bucket],
        customer_ref: int | None,
        wanted: str,
    ) -> dict[int, tuple[int, Any, Any, Any]]:
        """{bucket index: (count, sum, min, max)} for buckets with observations, in SQL;
        of sum, min and max only `wanted` ("sum", "min", "max" or "count": none) is computed,
        the others are None."""
        rows = self._inside(metric_ref, data_type, spans, customer_ref)
        value = rows.c.value
        numeric = data_type in ("NUMBER", "INTEGER")
        extra: Any = None
        if numeric and wanted in ("sum", "min", "max"):
            extra = getattr(func, wanted)(value)
        stmt = select(
            rows.c.idx, func.count(value), *([extra] if extra is not None else [])
        ).group_by(rows.c.idx)
        result: dict[int, tuple[int, Any, Any, Any]] = {}
        for row in await self._read(stmt, customer_ref):
            found = row[2] if extra is not None else None
            result[int(row[0])] = (
                int(row[1]),
                found if wanted == "sum" else None,
                found if wanted == "min" else None,
                found if wanted == "max" else None,
            )
        return result

    async def bucket_values(
        self, metric_ref: int, data_type: str, spans: list[Bucket], customer_ref: int | None
    ) -> list[tuple[int, Any]]:
        """(bucket index, value) of every observation inside, for aggregating exactly
        outside SQL."""
        rows = self._inside(metric_ref, data_type, spans, customer_ref)
        stmt = select(rows.c.idx, rows.c.value)
        return [(int(i), v) for i, v in await self._read(stmt, customer_ref)]

    def _changes(
        self, metric_ref: int, data_type: str, spans: list[Bucket], customer_ref: int | None
    ) -> Any:
        """Every observation before the last end with its bucket (-1: before the first),
        its value and the customer's previous value (NULL for their first observation)."""
        value = _obs.c[COLUMN_OF[data_type]]
        previous = func.lag(value, type_=value.type).over(
            partition_by=_obs.c.customer_ref, order_by=_obs.c.observed_at
        )
        return (
            select(self._bucket(spans), value.label("value"), previous.label("previous"))
            .where(*self._scope(metric_ref, customer_ref), _obs.c.observed_at < spans[-1].end)
            .subquery("changes")
        )

    async def snapshot_changes(
        self,
        metric_ref: int,
        data_type: str,
        spans: list[Bucket],
        customer_ref: int | None,
        with_sum: bool,
    ) -> dict[int, tuple[int, Any]]:
        """{bucket index (-1: before the first bucket): (customers whose first value falls
        there, sum of the changes of value there or None without `with_sum`)}. A customer's
        value at a bucket's end is the sum of their changes before it, so running totals
        give every snapshot. In SQL, exactly (NUMERIC arithmetic: PostgreSQL only)."""
        changes = self._changes(metric_ref, data_type, spans, customer_ref)
        first = case((changes.c.previous.is_(None), 1), else_=0)
        columns = [changes.c.idx, func.sum(first)]
        if with_sum:
            # NUMERIC, so that INTEGER differences cannot overflow 64 bits.
            before = func.coalesce(cast(changes.c.previous, Numeric), 0)
            columns.append(func.sum(cast(changes.c.value, Numeric) - before))
        stmt = select(*columns).group_by(changes.c.idx)
        rows = await self._read(stmt, customer_ref)
        return {int(r[0]): (int(r[1]), r[2] if with_sum else None) for r in rows}

    async def snapshot_rows(
        self, metric_ref: int, data_type: str, spans: list[Bucket], customer_ref: int | None
    ) -> list[tuple[int, Any, Any]]:
        """(bucket index, value, previous value) of every observation before the last end,
        for computing `snapshot_changes` exactly outside SQL."""
        changes = self._changes(metric_ref, data_type, spans, customer_ref)
        stmt = select(changes.c.idx, changes.c.value, changes.c.previous)
        return [(int(i), v, p) for i, v, p in await self._read(stmt, customer_ref)]


def _parts(spans: list[Bucket], parts: int) -> list[tuple[Any, Any]]:
    """[first start, last end) cut at bucket bounds into at most `parts` consecutive ranges
    of about as many buckets each."""
    count = min(parts, len(spans))
    firsts = [len(spans) * i // count for i in range(count)]
    starts = [spans[i].start for i in firsts]
    return list(zip(starts, [*starts[1:], spans[-1].end], strict=True))
