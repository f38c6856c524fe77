"""Per-bucket aggregates of one metric: over the observations inside each bucket, or over
every customer's value as of each bucket's end."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select

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

    @property
    def exact_in_sql(self) -> bool:
        """Whether SQL sums NUMBER values exactly here (SQLite stores them as text)."""
        return self._conn.dialect.name != "sqlite"

    def _buckets(self, spans: list[Bucket]) -> Any:
        rows = [(i, b.start, b.end) for i, b in enumerate(spans)]
        return dialect.time_spans(rows, self._conn.dialect.name)

    def _scope(self, metric_ref: int, customer_ref: int | None) -> list[Any]:
        conditions = [_obs.c.organization_id == self._org, _obs.c.metric_ref == metric_ref]
        if customer_ref is not None:
            conditions.append(_obs.c.customer_ref == customer_ref)
        return conditions

    def _source(
        self,
        metric_ref: int,
        data_type: str,
        spans: list[Bucket],
        customer_ref: int | None,
        snapshot: bool,
    ) -> tuple[Any, Any, Any]:
        """(rows joined to their bucket, the buckets, the value column)."""
        buckets = self._buckets(spans)
        value = _obs.c[COLUMN_OF[data_type]]
        if not snapshot:
            joined = buckets.join(
                _obs,
                and_(
                    *self._scope(metric_ref, customer_ref),
                    _obs.c.observed_at >= buckets.c.start_at,
                    _obs.c.observed_at < buckets.c.end_at,
                ),
            )
            return joined, buckets, value
        history = (
            select(
                _obs.c.observed_at,
                value.label("value"),
                func.lead(_obs.c.observed_at)
                .over(partition_by=_obs.c.customer_ref, order_by=_obs.c.observed_at)
                .label("next_at"),
            )
            .where(*self._scope(metric_ref, customer_ref), _obs.c.observed_at < spans[-1].end)
            .subquery("history")
        )
        # The value in force at a bucket's end: observed before the end, not yet replaced.
        joined = buckets.join(
            history,
            and_(
                history.c.observed_at < buckets.c.end_at,
                or_(history.c.next_at.is_(None), history.c.next_at >= buckets.c.end_at),
            ),
        )
        return joined, buckets, history.c.value

    async def aggregate(
        self,
        metric_ref: int,
        data_type: str,
        spans: list[Bucket],
        customer_ref: int | None,
        snapshot: bool,
    ) -> dict[int, tuple[int, Any, Any, Any]]:
        """{bucket index: (count, sum, min, max)} for buckets with values, in SQL."""
        joined, buckets, value = self._source(metric_ref, data_type, spans, customer_ref, snapshot)
        numeric = data_type in ("NUMBER", "INTEGER")
        stmt = (
            select(
                buckets.c.idx,
                func.count(value),
                func.sum(value) if numeric else func.count(value),
                func.min(value) if numeric else func.count(value),
                func.max(value) if numeric else func.count(value),
            )
            .select_from(joined)
            .group_by(buckets.c.idx)
        )
        return {int(r[0]): (int(r[1]), r[2], r[3], r[4]) for r in await self._conn.execute(stmt)}

    async def bucket_values(
        self,
        metric_ref: int,
        data_type: str,
        spans: list[Bucket],
        customer_ref: int | None,
        snapshot: bool,
    ) -> list[tuple[int, Any]]:
        """(bucket index, value) pairs, for aggregating exactly outside SQL."""
        joined, buckets, value = self._source(metric_ref, data_type, spans, customer_ref, snapshot)
        stmt = select(buckets.c.idx, value).select_from(joined)
        return [(int(i), v) for i, v in await self._conn.execute(stmt)]
