"""The service's notion of now: UTC, truncated to the milliseconds timestamps are shown with,
so what is stored is exactly what a client is told."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    current = datetime.now(UTC)
    return current.replace(microsecond=current.microsecond // 1000 * 1000)


def format_timestamp(value: datetime) -> str:
    """RFC 3339, UTC, exactly three fractional digits and `Z` (`2025-11-27T10:06:09.459Z`)."""
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="milliseconds") + "Z"
