"""Summaries of one metric across customers' current (or as-of) values.

Percentiles interpolate linearly between the two nearest ranks (PostgreSQL's
`percentile_cont`, NumPy's default): p at rank h = (n - 1) * p."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from customer_metrics import clock
from customer_metrics.errors import Unavailable
from customer_metrics.metrics.repository import MetricRow
from customer_metrics.queries.buckets import Bucket
from customer_metrics.queries.rollup import PERIOD, exact, period_of
from customer_metrics.queries.rollup_repository import RollupRepository
from customer_metrics.queries.summary_repository import SummaryRepository
from customer_metrics.values import typed

PERCENTILES = {"p50": Decimal("0.5"), "p90": Decimal("0.9"), "p99": Decimal("0.99")}
SCALE = Decimal("1e-12")  # averages and interpolated percentiles: 12 decimal places


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    fields: dict[str, Any]


def _round(value: Decimal) -> Decimal:
    with localcontext() as context:
        context.prec = 80
        return value.quantize(SCALE, rounding=ROUND_HALF_EVEN).normalize()


def divide(total: Decimal, count: int) -> Decimal:
    with localcontext() as context:
        context.prec = 80
        return _round(total / count)


# Every observation is at most `typed.FUTURE_TOLERANCE` (5 minutes) ahead of the clock
# that accepted it: a snapshot this far ahead holds every customer's current value.
_BEYOND_EVERY_OBSERVATION = timedelta(days=1)
_ATTEMPTS = 3


class SummaryService:
    def __init__(self, repository: SummaryRepository, rollups: RollupRepository) -> None:
        self._repo = repository
        self._rollups = rollups

    async def _totals(self, metric: MetricRow, as_of: datetime | None) -> tuple[int, Decimal]:
        """Count and sum of the current values. Without `as_of`, from the series rollup: its
        snapshot after every observation (a read of the metric's 15-minute totals and the
        changes not folded yet) instead of a pass over a million current values."""
        if as_of is not None:
            return await self._repo.totals(metric.id, metric.data_type, as_of)
        end = period_of(clock.now() + _BEYOND_EVERY_OBSERVATION)
        spans = [Bucket(end - PERIOD, end)]
        totals = await self._rollups.bucket_totals(metric.id, spans, inside_only=False)
        count, total = 0, Decimal(0)
        with exact():
            for part in totals.values():
                count += part.snap_count
                total += part.snap_sum
        return count, total

    async def summarize(self, metric: MetricRow, as_of: datetime | None) -> Summary:
        kind = metric.data_type
        if kind in ("NUMBER", "INTEGER"):
            count, total = await self._totals(metric, as_of)
            for _ in range(_ATTEMPTS):
                fields = await self._numeric(metric, count, total, as_of)
                if fields is not None:
                    return Summary(count, fields)
                # The values changed between the statements (a customer erased meanwhile):
                # count and sum again from the values the ranks are read from.
                count, total = await self._repo.totals(metric.id, kind, as_of)
            raise Unavailable("The metric's values kept changing while they were summarised.")
        count = await self._repo.count(metric.id, kind, as_of)
        if kind in ("STRING", "BOOLEAN"):
            top = await self._repo.top_values(metric.id, kind, as_of)
            return Summary(count, {"values": [{"value": v, "count": n} for v, n in top]})
        low, high = await self._repo.min_max(metric.id, kind, as_of) if count else (None, None)
        return Summary(count, {"min": typed.to_json(kind, low), "max": typed.to_json(kind, high)})

    async def _numeric(
        self, metric: MetricRow, count: int, total: Decimal, as_of: datetime | None
    ) -> dict[str, Any] | None:
        """The numeric fields; None when a rank asked for is not there any more (the count
        came from an earlier statement, and values were removed since)."""
        names = ("sum", "min", "max", "avg", *PERCENTILES)
        if count == 0:
            return dict.fromkeys(names)
        kind = metric.data_type
        positions = {name: (count - 1) * p for name, p in PERCENTILES.items()}
        ranks = {0, count - 1}
        for h in positions.values():
            ranks |= {int(h), min(int(h) + 1, count - 1)}
        at = await self._repo.at_ranks(metric.id, kind, as_of, sorted(ranks), count)
        if not ranks <= at.keys():
            return None
        as_decimal = {rank: Decimal(value) for rank, value in at.items()}
        result: dict[str, Any] = {
            "sum": total if kind == "NUMBER" else int(total),
            "min": at[0],
            "max": at[count - 1],
            "avg": divide(total, count),
        }
        for name, h in positions.items():
            low = int(h)
            high = min(low + 1, count - 1)
            fraction = h - low
            value = as_decimal[low] + (as_decimal[high] - as_decimal[low]) * fraction
            result[name] = _round(value)
        return result
