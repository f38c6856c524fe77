"""Query parameters several routers share: instants, given as RFC 3339 text."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from customer_metrics.values.typed import TIMESTAMP_PATTERN

# typed.parse_timestamp checks the shape (422 datetime_parsing); the document shows it.
TIME: dict[str, Any] = {
    "description": "RFC 3339 with a zone.",
    "max_length": 64,
    "json_schema_extra": {"pattern": TIMESTAMP_PATTERN},
}
TimeQuery = Annotated[str | None, Query(**TIME)]
FromQuery = Annotated[str | None, Query(alias="from", **TIME)]
ToQuery = Annotated[str | None, Query(alias="to", **TIME)]
