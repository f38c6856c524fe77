"""Time series of one metric: per-bucket aggregates of the observations inside each bucket
(`sum avg min max count`) or of every customer's value as of each bucket's end
(`snapshot_sum snapshot_avg snapshot_count`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from customer_metrics.errors import InvalidRequest
from customer_metrics.metrics.repository import MetricRow
from customer_metrics.queries.buckets import Bucket, buckets, zone
from customer_metrics.queries.rollup import exact, on_period_bounds
from customer_metrics.queries.rollup_repository import RollupRepository
from customer_metrics.queries.series_repository import SeriesRepository
from customer_metrics.queries.summary import divide

AGGREGATES = ("sum", "avg", "min", "max", "count", "snapshot_sum", "snapshot_avg", "snapshot_count")
NUMERIC_ONLY = frozenset({"sum", "avg", "min", "max", "snapshot_sum", "snapshot_avg"})


@dataclass(frozen=True, slots=True)
class Point:
    bucket: Bucket
    value: Any
    count: int


@dataclass(slots=True)
class _Stats:
    count: int = 0
    total: Any = None
    low: Any = None
    high: Any = None

    def add(self, value: Any) -> None:
        if value is None:
            return
        self.count += 1
        self.total = value if self.total is None else self.total + value
        self.low = value if self.low is None or value < self.low else self.low
        self.high = value if self.high is None or value > self.high else self.high


class SeriesService:
    def __init__(self, repository: SeriesRepository, rollups: RollupRepository) -> None:
        self._repo = repository
        self._rollups = rollups

    async def series(
        self,
        metric: MetricRow,
        start: datetime,
        end: datetime,
        interval: str,
        tz_name: str,
        agg: str,
        customer_ref: int | None,
    ) -> list[Point]:
        numeric = metric.data_type in ("NUMBER", "INTEGER")
        if agg in NUMERIC_ONLY and not numeric:
            raise InvalidRequest(
                ("query", "agg"), f"{agg} needs a NUMBER or INTEGER metric", "value_error"
            )
        spans = buckets(start, end, interval, zone(tz_name))
        base = agg.removeprefix("snapshot_")
        bounds = [b.start for b in spans] + [spans[-1].end]
        if customer_ref is None and base in ("sum", "avg", "count") and on_period_bounds(bounds):
            stats = await self._from_rollup(metric, spans, agg)
        elif agg.startswith("snapshot_"):
            stats = await self._snapshots(metric, spans, customer_ref, base != "count")
        else:
            stats = await self._stats(metric, spans, customer_ref, base)
        points = []
        for index, span in enumerate(spans):
            s = stats.get(index, _Stats())
            points.append(Point(span, _value(base, s, metric.data_type), s.count))
        return points

    async def _from_rollup(
        self, metric: MetricRow, spans: list[Bucket], agg: str
    ) -> dict[int, _Stats]:
        """Over every customer, from the metric's rollup: its 15-minute totals (every bound
        of these buckets is a period bound) and the changes not folded into them yet."""
        snapshot = agg.startswith("snapshot_")
        totals = await self._rollups.bucket_totals(metric.id, spans, inside_only=not snapshot)
        numeric = metric.data_type in ("NUMBER", "INTEGER")
        stats: dict[int, _Stats] = {}
        if not snapshot:
            for index, t in totals.items():
                if index >= 0 and t.obs_count:
                    stats[index] = _Stats(t.obs_count, t.obs_sum if numeric else None)
            return stats
        start = totals.get(-1)
        count, total = (start.snap_count, start.snap_sum) if start else (0, Decimal(0))
        with exact():
            for index in range(len(spans)):
                if (part := totals.get(index)) is not None:
                    count += part.snap_count
                    total += part.snap_sum
                stats[index] = _Stats(count, total if numeric else None)
        return stats

    async def _stats(
        self, metric: MetricRow, spans: list[Bucket], customer_ref: int | None, base: str
    ) -> dict[int, _Stats]:
        """Aggregates of the observations inside each bucket."""
        if metric.data_type in ("NUMBER", "INTEGER") and not self._repo.exact_in_sql:
            stats: dict[int, _Stats] = {}
            for index, value in await self._repo.bucket_values(
                metric.id, metric.data_type, spans, customer_ref
            ):
                stats.setdefault(index, _Stats()).add(value)
            return stats
        wanted = "sum" if base == "avg" else base
        rows = await self._repo.aggregate(metric.id, metric.data_type, spans, customer_ref, wanted)
        return {i: _Stats(count, total, low, high) for i, (count, total, low, high) in rows.items()}

    async def _snapshots(
        self, metric: MetricRow, spans: list[Bucket], customer_ref: int | None, with_sum: bool
    ) -> dict[int, _Stats]:
        """Count and sum of every customer's latest value before each bucket's end: running
        totals of the changes (first values, differences from the previous value) that fall
        before it."""
        if self._repo.exact_in_sql:
            changes = await self._repo.snapshot_changes(
                metric.id, metric.data_type, spans, customer_ref, with_sum
            )
        else:
            changes = {}
            for index, value, previous in await self._repo.snapshot_rows(
                metric.id, metric.data_type, spans, customer_ref
            ):
                n, change = changes.get(index, (0, 0))
                if with_sum:
                    change += value - (0 if previous is None else previous)
                changes[index] = (n + (previous is None), change)
        count, total = changes.get(-1, (0, 0))
        stats: dict[int, _Stats] = {}
        for index in range(len(spans)):
            n, change = changes.get(index, (0, 0))
            count += n
            total = total + change if with_sum else None
            stats[index] = _Stats(count, total)
        return stats


def _value(base: str, stats: _Stats, data_type: str) -> Any:
    if base == "count":
        return stats.count
    if stats.count == 0:
        return None
    if base == "avg":
        return divide(Decimal(stats.total), stats.count)
    chosen = {"sum": stats.total, "min": stats.low, "max": stats.high}[base]
    if data_type == "INTEGER":
        return int(chosen)
    return chosen
