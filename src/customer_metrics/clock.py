"""The service's notion of now: UTC, truncated to the milliseconds timestamps are shown with,
so what is stored is exactly what a client is told."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    current = datetime.now(UTC)
    return current.replace(microsecond=current.microsecond // 1000 * 1000)


def format_timestamp(value: datetime) -> str:
    """RFC 3339, UTC, exactly three fractional digits and `Z` (`2025-11-27T10:06:09.459Z`)."""
    if value.tzinfo is not UTC:  # rows and the clock are already in UTC: the common case
        value = value.astimezone(UTC)
    # `…T10:06:09.459+00:00` → `…T10:06:09.459Z` (a 4-digit year always: isoformat pads it)
    return value.isoformat(timespec="milliseconds")[:23] + "Z"
