"""Request bodies for queries. The filter tree is checked by `queries.filters`, which knows
the metrics' types and reports each problem at the leaf's path."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

STRICT = ConfigDict(extra="forbid", strict=True)
# A sort key names a metric or a field (the other absent or null), as the service checks.
_METRIC_OR_FIELD: JsonDict = {
    "oneOf": [
        {"required": [name], "properties": {name: {"type": "string"}}}
        for name in ("metric", "field")
    ]
}


class SortKey(BaseModel):
    model_config = STRICT | ConfigDict(json_schema_extra=_METRIC_OR_FIELD)

    metric: str | None = Field(default=None, description="A metric ref.")
    field: Literal["customer_id", "name", "email", "time_created"] | None = None
    direction: Literal["asc", "desc"] = "asc"


class SearchRequest(BaseModel):
    model_config = STRICT

    filter: dict[str, Any] | None = Field(
        default=None,
        description=(
            'A node: {"and": [...]}, {"or": [...]}, {"not": node}, '
            '{"metric": ref, "op": ..., "value": ...} or {"field": ..., "op": ..., "value": ...}.'
        ),
    )
    sort: list[SortKey] = Field(default_factory=list, max_length=5)
    include: list[str] = Field(default_factory=list, max_length=50)
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=4096)
    count: bool = False


class SearchHit(BaseModel):
    customer_id: str
    name: str | None
    email: str | None
    metrics: dict[str, Any]


class SearchResult(BaseModel):
    data: list[SearchHit]
    next_cursor: str | None
    count: int | None = None


class ValueCount(BaseModel):
    value: Any
    count: int


class SummaryOut(BaseModel):
    """NUMBER and INTEGER metrics carry sum, min, max, avg, p50, p90, p99 (null when `count` is
    0); STRING and BOOLEAN carry `values`, the 50 most frequent; DATE and DATETIME min and max."""

    metric_id: str
    data_type: str
    as_of: str
    count: int
    sum: Any = None
    min: Any = None
    max: Any = None
    avg: Any = None
    p50: Any = None
    p90: Any = None
    p99: Any = None
    values: list[ValueCount] | None = None


class BucketOut(BaseModel):
    start: str
    end: str
    value: Any
    count: int


class SeriesOut(BaseModel):
    metric_id: str
    interval: str
    tz: str
    agg: str
    data: list[BucketOut]
