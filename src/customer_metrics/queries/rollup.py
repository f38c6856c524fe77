"""What one customer's observations of a metric add to a series' totals, in plain Python:
each observation counts once where it lies (`obs_*`) and adds its change of the customer's
value there (`snap_*`: a first value counts a customer and adds itself; a later one adds the
difference from the value before it). Summed before a moment, the changes give every
customer's value as of that moment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

PERIOD = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def period_of(moment: datetime) -> datetime:
    """The start of the 15-minute period (from the Unix epoch, UTC) that holds `moment`."""
    return moment - (moment - _EPOCH) % PERIOD


def on_period_bounds(moments: list[datetime]) -> bool:
    """Whether every moment starts a period: then every bucket is a whole number of them."""
    return all((m - _EPOCH) % PERIOD == timedelta(0) for m in moments)


@dataclass(slots=True)
class Totals:
    obs_count: int = 0
    obs_sum: Decimal = Decimal(0)
    snap_count: int = 0
    snap_sum: Decimal = Decimal(0)

    def add(self, other: Totals, sign: int = 1) -> None:
        """Exact for any 38-digit values: call inside `exact()`."""
        self.obs_count += sign * other.obs_count
        self.obs_sum += sign * other.obs_sum
        self.snap_count += sign * other.snap_count
        self.snap_sum += sign * other.snap_sum


def exact() -> Any:
    """A decimal context wide enough that sums of stored values are exact (38 digits either
    side of the point, and room for millions of them)."""
    return localcontext(prec=120)


def changes(
    rows: list[tuple[datetime, Decimal | None]], since: datetime
) -> list[tuple[datetime, Totals]]:
    """(observed_at, what it adds) of each of one customer's rows at or after `since`;
    `rows` are that customer's rows from the last one before `since` on, in time order.
    Values are None for metrics that are not numeric (only counts are kept)."""
    result = []  # call inside `exact()`
    previous: tuple[datetime, Decimal | None] | None = None
    for observed_at, value in rows:
        if observed_at >= since:
            number = Decimal(0) if value is None else value
            before = Decimal(0) if previous is None or previous[1] is None else previous[1]
            result.append((observed_at, Totals(1, number, int(previous is None), number - before)))
        previous = (observed_at, value)
    return result


def number(value_number: Any, value_integer: Any) -> Decimal | None:
    """An observation's numeric value as a Decimal (None when it has neither)."""
    if value_number is not None:
        return Decimal(value_number)
    return None if value_integer is None else Decimal(value_integer)
