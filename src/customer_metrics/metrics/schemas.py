"""Request and response bodies for metric definitions (strict: unknown fields are 422)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from customer_metrics.text import CleanStr, LabelStr, Timestamp

DATA_TYPES = ("NUMBER", "INTEGER", "STRING", "BOOLEAN", "DATE", "DATETIME")


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


DataType = Annotated[
    Literal["NUMBER", "INTEGER", "STRING", "BOOLEAN", "DATE", "DATETIME"],
    BeforeValidator(_upper),
    Field(description="Accepted in any case; returned upper-case.", examples=["NUMBER"]),
]

STRICT = ConfigDict(extra="forbid", strict=True)


class MetricCreate(BaseModel):
    model_config = STRICT

    name: LabelStr = Field(examples=["Customer Tier"])
    data_type: DataType
    description: CleanStr | None = None
    key: LabelStr | None = Field(
        default=None, description="`^[a-z][a-z0-9_]{0,63}$`; derived from the name when omitted."
    )
    unit: LabelStr | None = Field(default=None, examples=["USD"])
    allowed_values: list[CleanStr] | None = Field(
        default=None, description="STRING only: the closed set of values (1-500 distinct)."
    )


class MetricUpdate(BaseModel):
    """Only the fields sent are changed; `key`, `id` and `metric_id` never change."""

    model_config = STRICT

    name: LabelStr | None = None
    description: CleanStr | None = None
    data_type: DataType | None = None
    unit: LabelStr | None = None
    allowed_values: list[CleanStr] | None = None
    archived: bool | None = None


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
