"""Request and response bodies for metric values."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from customer_metrics.text import CleanStr

STRICT = ConfigDict(extra="forbid", strict=True)


class ValueWrite(BaseModel):
    """Either `value` (with an optional `observed_at`) or, for NUMBER/INTEGER, `increment`."""

    model_config = STRICT

    value: Any = Field(default=None, description="Typed by the metric's data_type.")
    increment: Any = Field(
        default=None, description="NUMBER/INTEGER only: add to the current value."
    )
    observed_at: str | None = Field(
        default=None, description="RFC 3339 with a zone; defaults to now; at most 5 minutes ahead."
    )
    source: CleanStr | None = Field(default=None, examples=["billing"])


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
    model_config = STRICT

    customer_id: str
    metric: str = Field(description="A metric ref: `METRIC-005`, the key, or the numeric id.")
    value: Any = None
    increment: Any = None
    observed_at: str | None = None
    source: CleanStr | None = None


class BatchWrite(BaseModel):
    model_config = STRICT

    values: list[dict[str, Any]] = Field(description="Up to 10,000 items, each a BatchItem.")
    atomic: bool = Field(default=False, description="Store all items or none.")
    create_customers: bool = True


class ItemError(BaseModel):
    index: int
    detail: list[dict[str, Any]]


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    errors: list[ItemError]
