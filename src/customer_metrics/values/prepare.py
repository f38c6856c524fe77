"""Checking one write against its metric — shared by the single and the batch write, so an
item in a batch is judged exactly like a single request."""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from customer_metrics.errors import Conflict, InvalidRequest
from customer_metrics.limits import Limits, check_length
from customer_metrics.metrics.repository import MetricRow
from customer_metrics.values import typed
from customer_metrics.values.schemas import SOURCE_MAX

NUMERIC_TYPES = frozenset({"NUMBER", "INTEGER"})

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """Either a typed value at observed_at, or an increment to apply to the current value."""

    value: typed.TypedValue | None
    increment: Any
    observed_at: datetime
    source: str | None


def archived_error(ref: str) -> Conflict:
    return Conflict(
        f"Metric {ref!r} is archived and takes no new values; restore it with "
        'PATCH {"archived": false} first.',
        "metric_archived",
    )


def prepare_write(
    metric: MetricRow,
    fields: Mapping[str, Any],
    sent: Container[str],
    now: datetime,
    limits: Limits,
    loc: Loc,
) -> PreparedWrite:
    source = check_source(fields, loc)
    if "increment" in sent:
        return _prepare_increment(metric, fields, sent, now, source, loc)
    value, observed_at = prepare_value(metric, fields, sent, now, limits, loc)
    return PreparedWrite(
        typed.TypedValue(typed.COLUMN_OF[metric.data_type], value), None, observed_at, source
    )


def check_source(fields: Mapping[str, Any], loc: Loc) -> str | None:
    source: str | None = fields.get("source")
    if source is not None:
        check_length((*loc, "source"), source, SOURCE_MAX)
    return source


def prepare_value(
    metric: MetricRow,
    fields: Mapping[str, Any],
    sent: Container[str],
    now: datetime,
    limits: Limits,
    loc: Loc,
) -> tuple[Any, datetime]:
    """The stored value and observed_at of a write that is not an increment (its source
    checked first, by `check_source`). The batch write calls this for each plain item, with
    the item itself as both `fields` and `sent`."""
    if "value" not in sent or fields.get("value") is None:
        raise InvalidRequest((*loc, "value"), "Field required (value or increment)", "missing")
    value = typed.parse_typed(
        metric.data_type,
        fields["value"],
        (*loc, "value"),
        metric.allowed_values,
        limits.string_value,
    )
    observed_at = now
    raw_observed_at = fields.get("observed_at")
    if raw_observed_at is not None:
        observed_at = typed.parse_timestamp(raw_observed_at, (*loc, "observed_at"))
        typed.check_observed_at(observed_at, now, (*loc, "observed_at"))
    return value, observed_at


def _prepare_increment(
    metric: MetricRow,
    fields: Mapping[str, Any],
    sent: Container[str],
    now: datetime,
    source: str | None,
    loc: Loc,
) -> PreparedWrite:
    for forbidden in ("value", "observed_at"):
        if forbidden in sent:
            raise InvalidRequest(
                (*loc, forbidden),
                f"{forbidden} cannot be sent with increment (an increment is observed now)",
                "extra_forbidden",
            )
    if metric.data_type not in NUMERIC_TYPES:
        raise InvalidRequest(
            (*loc, "increment"),
            "increment applies only to NUMBER and INTEGER metrics",
            "value_error",
        )
    typed.add(metric.data_type, None, fields.get("increment"), (*loc, "increment"))
    return PreparedWrite(None, fields.get("increment"), now, source)
