"""Request and response bodies for metric values."""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

from pydantic import BaseModel, ConfigDict, Field, with_config
from pydantic.config import JsonDict
from typing_extensions import TypedDict

from customer_metrics.customers.schemas import CUSTOMER_ID_SCHEMA
from customer_metrics.text import CleanStr, Documented
from customer_metrics.values.typed import TIMESTAMP_PATTERN

STRICT = ConfigDict(extra="forbid", strict=True)
SOURCE_MAX = 100
BATCH_MAX_ITEMS = 10_000

# What the JSON of a value can be at all; which one a metric takes depends on its data_type.
Value = Annotated[Any, Documented(type=["number", "string", "boolean"])]
Increment = Annotated[Any, Documented(type="number")]
TimestampText = Annotated[str, Documented(pattern=TIMESTAMP_PATTERN)]
Source = Annotated[CleanStr, Documented(minLength=1, maxLength=SOURCE_MAX)]
# `value` (with an optional `observed_at`), or `increment` (observed now), never both.
_VALUE_OR_INCREMENT: JsonDict = {
    "oneOf": [
        {"required": ["value"], "not": {"required": ["increment"]}},
        {
            "required": ["increment"],
            "not": {"anyOf": [{"required": ["value"]}, {"required": ["observed_at"]}]},
        },
    ]
}


class ValueWrite(BaseModel):
    """Either `value` (with an optional `observed_at`) or, for NUMBER/INTEGER, `increment`."""

    model_config = STRICT | ConfigDict(json_schema_extra=_VALUE_OR_INCREMENT)

    value: Value = Field(default=None, description="Typed by the metric's data_type.")
    increment: Increment = Field(
        default=None, description="NUMBER/INTEGER only: add to the current value."
    )
    observed_at: TimestampText | None = Field(
        default=None, description="RFC 3339 with a zone; defaults to now; at most 5 minutes ahead."
    )
    source: Source | None = Field(default=None, examples=["billing"])


class ObservationOut(BaseModel):
    customer_id: str
    metric_id: str
    key: str
    value: Any
    observed_at: str
    recorded_at: str
    source: str | None


class ObservationPage(BaseModel):
    data: list[ObservationOut]
    next_cursor: str | None


class CurrentValueOut(BaseModel):
    metric_id: str
    key: str
    name: str
    data_type: str
    unit: str | None
    value: Any
    observed_at: str


class CurrentValues(BaseModel):
    data: list[CurrentValueOut]


class Deleted(BaseModel):
    deleted: int


class BatchItem(BaseModel):
    model_config = STRICT | ConfigDict(json_schema_extra=_VALUE_OR_INCREMENT)

    customer_id: Annotated[str, Documented(**CUSTOMER_ID_SCHEMA)]
    metric: str = Field(description="A metric ref: `METRIC-005`, the key, or the numeric id.")
    value: Value = None
    increment: Increment = None
    observed_at: TimestampText | None = None
    source: Source | None = None


@with_config(STRICT)
class BatchItemFields(TypedDict):
    """BatchItem's rules, validated into a dict of the fields sent (see values/batch.py)."""

    customer_id: str
    metric: str
    value: NotRequired[Value]
    increment: NotRequired[Increment]
    observed_at: NotRequired[TimestampText | None]
    source: NotRequired[Source | None]


# Items are checked one by one (a bad one is reported, not a 422 for the whole batch), so the
# body takes any objects; the document shows what each must be.
_ITEM_SCHEMA = {"items": BatchItem.model_json_schema(), "maxItems": BATCH_MAX_ITEMS}


class BatchWrite(BaseModel):
    model_config = STRICT

    values: Annotated[list[dict[str, Any]], Documented(**_ITEM_SCHEMA)] = Field(
        description="Up to 10,000 items, each a BatchItem."
    )
    atomic: bool = Field(default=False, description="Store all items or none.")
    create_customers: bool = True


class ItemError(BaseModel):
    index: int
    detail: list[dict[str, Any]]


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    errors: list[ItemError]
