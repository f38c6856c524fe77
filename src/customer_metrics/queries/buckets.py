"""Calendar buckets in an IANA time zone: days of 23 or 25 hours across DST changes, weeks
from Monday, calendar months. Hours are exact 60-minute steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from customer_metrics.errors import InvalidRequest

INTERVALS = ("hour", "day", "week", "month")
MAX_BUCKETS = 1000


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    end: datetime


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(
            ("query", "tz"), f"Unknown IANA time zone {name!r}", "value_error"
        ) from None


def _floor(moment: datetime, interval: str, tz: ZoneInfo) -> datetime:
    local = moment.astimezone(tz)
    if interval == "hour":
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    day = local.date()
    if interval == "week":
        day -= timedelta(days=day.weekday())
    elif interval == "month":
        day = day.replace(day=1)
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def _next(start: datetime, interval: str, tz: ZoneInfo) -> datetime:
    if interval == "hour":
        return start + timedelta(hours=1)
    local = start.astimezone(tz).date()
    if interval == "day":
        day = local + timedelta(days=1)
    elif interval == "week":
        day = local + timedelta(days=7)
    else:
        day = (local.replace(day=28) + timedelta(days=4)).replace(day=1)
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def buckets(start: datetime, end: datetime, interval: str, tz: ZoneInfo) -> list[Bucket]:
    """Whole calendar buckets covering [start, end)."""
    if end <= start:
        raise InvalidRequest(("query", "to"), "to must be after from", "value_error")
    result = []
    try:
        current = _floor(start, interval, tz)
    except (OverflowError, ValueError):
        raise _out_of_range() from None
    while current < end:
        try:
            following = _next(current, interval, tz)
        except (OverflowError, ValueError):
            raise _out_of_range() from None
        result.append(Bucket(current, following))
        if len(result) > MAX_BUCKETS:
            raise InvalidRequest(
                ("query", "interval"),
                f"At most {MAX_BUCKETS} buckets: choose a longer interval or a shorter range",
                "too_long",
            )
        current = following
    return result


def _out_of_range() -> InvalidRequest:
    return InvalidRequest(
        ("query", "from"), "The range reaches past the years 1 to 9999", "value_error"
    )
