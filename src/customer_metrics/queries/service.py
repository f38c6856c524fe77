"""Segment search: resolve the metrics a request names, check the filter, page by keyset."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from customer_metrics.errors import InvalidRequest
from customer_metrics.limits import Limits
from customer_metrics.metrics.repository import MetricRepository, MetricRow
from customer_metrics.metrics.service import resolve_refs
from customer_metrics.queries.filter_repository import SortSpec
from customer_metrics.queries.filters import FilterParser, referenced_metrics
from customer_metrics.queries.repository import SearchRepository
from customer_metrics.queries.schemas import SearchRequest
from customer_metrics.text import is_clean
from customer_metrics.values import typed


@dataclass(frozen=True, slots=True)
class Found:
    customer_id: str
    name: str | None
    email: str | None
    metrics: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SearchPage:
    data: list[Found]
    next_cursor: list[Any] | None
    count: int | None


class SearchService:
    def __init__(
        self, repository: SearchRepository, metrics: MetricRepository, limits: Limits
    ) -> None:
        self._repo = repository
        self._metrics = metrics
        self._limits = limits

    async def search(self, request: SearchRequest, cursor: list[Any] | None) -> SearchPage:
        refs = referenced_metrics(request.filter)
        refs += [key.metric for key in request.sort if key.metric is not None]
        refs += request.include
        metrics = await resolve_refs(self._metrics, refs)
        node = None
        if request.filter is not None:
            node = FilterParser(metrics, self._limits.string_value).parse(request.filter)
        sort = [
            self._sort_spec(index, key.metric, key.field, key.direction, metrics)
            for index, key in enumerate(request.sort)
        ]
        included = [
            self._included(index, ref, metrics) for index, ref in enumerate(request.include)
        ]
        after = decode_position(cursor, sort) if cursor is not None else None
        hits = await self._repo.search(node, sort, after, request.limit + 1)
        page = hits[: request.limit]
        next_cursor = (
            encode_position(page[-1].sort_values, sort) if len(hits) > request.limit else None
        )
        values = await self._repo.included_values([h.ref for h in page], [m.id for m in included])
        by_pair = {(c, m): v for c, m, v in values}
        data = [
            Found(
                hit.customer_id,
                hit.name,
                hit.email,
                {m.key: _current(m, by_pair.get((hit.ref, m.id))) for m in included},
            )
            for hit in page
        ]
        count = await self._repo.count(node) if request.count else None
        return SearchPage(data, next_cursor, count)

    def _sort_spec(
        self,
        index: int,
        ref: str | None,
        field: str | None,
        direction: str,
        metrics: dict[str, MetricRow],
    ) -> SortSpec:
        loc: tuple[str | int, ...] = ("body", "sort", index)
        if (ref is None) == (field is None):
            raise InvalidRequest(
                loc, "A sort key names exactly one of metric or field", "value_error"
            )
        if field is not None:
            return SortSpec(direction=direction, field=field)
        metric = metrics.get(ref or "")
        if metric is None:
            raise InvalidRequest(
                (*loc, "metric"), f"No metric {ref!r} in this organization", "not_found"
            )
        return SortSpec(direction=direction, metric_ref=metric.id, data_type=metric.data_type)

    def _included(self, index: int, ref: str, metrics: dict[str, MetricRow]) -> MetricRow:
        metric = metrics.get(ref)
        if metric is None:
            raise InvalidRequest(
                ("body", "include", index), f"No metric {ref!r} in this organization", "not_found"
            )
        return metric


def _current(metric: MetricRow, values: dict[str, Any] | None) -> Any:
    if values is None:
        return None
    return typed.to_json(metric.data_type, values[typed.COLUMN_OF[metric.data_type]])


def _kind(spec: SortSpec) -> str:
    if spec.data_type:
        return spec.data_type
    return "DATETIME" if spec.field == "time_created" else "STRING"


def encode_position(values: tuple[Any, ...], sort: list[SortSpec]) -> list[Any]:
    *keys, ref = values
    encoded: list[Any] = []
    for value, spec in zip(keys, sort, strict=True):
        if value is None or (isinstance(value, bool | int | str) and _kind(spec) != "NUMBER"):
            encoded.append(value)
        elif isinstance(value, datetime | date):
            encoded.append(value.isoformat())
        else:
            encoded.append(str(value))  # NUMBER: exact text (a REAL on SQLite, a NUMERIC on PG)
    return [*encoded, ref]


def decode_position(cursor: list[Any], sort: list[SortSpec]) -> tuple[Any, ...]:
    invalid = InvalidRequest(
        ("body", "cursor"), "Cursor does not fit this search", "cursor_invalid"
    )
    if not isinstance(cursor, list) or len(cursor) != len(sort) + 1:
        raise invalid
    *keys, ref = cursor
    if not isinstance(ref, int) or isinstance(ref, bool) or not 0 <= ref <= typed.INT64_MAX:
        raise invalid
    decoded: list[Any] = []
    try:
        for value, spec in zip(keys, sort, strict=True):
            decoded.append(None if value is None else _decode(value, _kind(spec)))
    except (ValueError, TypeError, InvalidOperation, InvalidRequest):
        raise invalid from None
    return (*decoded, ref)


def _decode(value: Any, kind: str) -> Any:
    if kind == "NUMBER":
        return Decimal(str(value))
    if kind == "DATETIME":
        return datetime.fromisoformat(value)
    if kind == "DATE":
        return date.fromisoformat(value)
    if kind == "INTEGER":
        typed.parse_integer(value, ("body", "cursor"))
    if kind == "BOOLEAN" and not isinstance(value, bool):
        raise TypeError
    if kind == "STRING" and not (isinstance(value, str) and is_clean(value)):
        raise TypeError
    return value
