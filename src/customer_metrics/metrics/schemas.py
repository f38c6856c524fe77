"""Request and response bodies for metric definitions (strict: unknown fields are 422)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

from customer_metrics.limits import ALLOWED_VALUES_MAX, UNIT_MAX, Limits
from customer_metrics.metrics.refs import KEY_PATTERN
from customer_metrics.text import CleanStr, Documented, LabelStr, Timestamp

DATA_TYPES = ("NUMBER", "INTEGER", "STRING", "BOOLEAN", "DATE", "DATETIME")


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


DataType = Annotated[
    Literal["NUMBER", "INTEGER", "STRING", "BOOLEAN", "DATE", "DATETIME"],
    BeforeValidator(_upper),
    Field(description="Accepted in any case; returned upper-case.", examples=["NUMBER"]),
]

STRICT = ConfigDict(extra="forbid", strict=True)

# Lengths are checked by the service against the configured limits; the document states the
# defaults.
_DEFAULT = Limits()
Name = Annotated[LabelStr, Documented(maxLength=_DEFAULT.name)]
Description = Annotated[CleanStr, Documented(maxLength=_DEFAULT.description)]
Key = Annotated[LabelStr, Documented(pattern=KEY_PATTERN.pattern)]
Unit = Annotated[LabelStr, Documented(maxLength=UNIT_MAX)]
AllowedValues = Annotated[
    list[Annotated[CleanStr, Documented(minLength=1, maxLength=_DEFAULT.string_value)]],
    Documented(minItems=1, maxItems=ALLOWED_VALUES_MAX, uniqueItems=True),
]
# `allowed_values` is for STRING metrics only.
_ALLOWED_VALUES_FOR_STRINGS: JsonDict = {
    "anyOf": [
        {"properties": {"data_type": {"const": "STRING"}}},
        {"properties": {"allowed_values": {"type": "null"}}},
    ]
}


class MetricCreate(BaseModel):
    model_config = STRICT | ConfigDict(json_schema_extra=_ALLOWED_VALUES_FOR_STRINGS)

    name: Name = Field(examples=["Customer Tier"])
    data_type: DataType
    description: Description | None = None
    key: Key | None = Field(default=None, description="Derived from the name when omitted.")
    unit: Unit | None = Field(default=None, examples=["USD"])
    allowed_values: AllowedValues | None = Field(
        default=None, description="STRING only: the closed set of values."
    )


class MetricUpdate(BaseModel):
    """Only the fields sent are changed; `key`, `id` and `metric_id` never change. `name`,
    `data_type` and `archived` cannot be null (so the document leaves null out)."""

    model_config = STRICT

    name: Name | SkipJsonSchema[None] = None
    description: Description | None = None
    data_type: DataType | SkipJsonSchema[None] = None
    unit: Unit | None = None
    allowed_values: AllowedValues | None = None
    archived: bool | SkipJsonSchema[None] = None


class MetricOut(BaseModel):
    id: int
    metric_id: str = Field(examples=["METRIC-005"])
    name: str
    description: str | None
    data_type: str
    organization_id: int
    time_created: Timestamp
    time_updated: Timestamp
    key: str
    unit: str | None
    allowed_values: list[str] | None
    archived: bool


class MetricUsage(BaseModel):
    customers: int
    values: int
    last_value_at: Timestamp | None


class MetricDetailOut(MetricOut):
    usage: MetricUsage


class MetricPage(BaseModel):
    data: list[MetricOut]
    next_cursor: str | None
