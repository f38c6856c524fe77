"""Request and response bodies for customers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from customer_metrics.text import CleanStr, LabelStr, Timestamp

STRICT = ConfigDict(extra="forbid", strict=True)


class CustomerCreate(BaseModel):
    model_config = STRICT

    customer_id: LabelStr | None = Field(
        default=None,
        description="Your id for the customer (1-255 chars, no '/'); `CUSTOMER-NNN` when omitted.",
        examples=["acme-42"],
    )
    name: CleanStr | None = Field(default=None, examples=["Acme Inc"])
    email: CleanStr | None = Field(default=None, examples=["billing@acme.example"])


class CustomerReplace(BaseModel):
    """PUT body: the whole customer; fields left out become null."""

    model_config = STRICT

    name: CleanStr | None = None
    email: CleanStr | None = None


class CustomerUpdate(BaseModel):
    """PATCH body: only the fields sent change."""

    model_config = STRICT

    name: CleanStr | None = None
    email: CleanStr | None = None


class CustomerOut(BaseModel):
    id: int
    customer_id: str
    name: str | None
    email: str | None
    organization_id: int
    time_created: Timestamp
    time_updated: Timestamp


class CustomerPage(BaseModel):
    data: list[CustomerOut]
    next_cursor: str | None
