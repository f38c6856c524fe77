"""Request and response bodies for customers."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from customer_metrics.limits import Limits
from customer_metrics.text import FORBIDDEN_CLASS, CleanStr, Documented, LabelStr, Timestamp

STRICT = ConfigDict(extra="forbid", strict=True)

# Checked by the service (customers/service.py); the document states them, and the default
# length of an id (CM_MAX_CUSTOMER_ID_LENGTH).
NAME_MAX = 255
EMAIL_MAX = 320
_NOT = f"/{FORBIDDEN_CLASS}"
CUSTOMER_ID_SCHEMA: dict[str, Any] = {
    "maxLength": Limits().customer_id,
    # Trimmed, so at least one character that is not white space; never a '/'.
    "pattern": rf"^[^{_NOT}]*[^\s{_NOT}][^{_NOT}]*$",
    # `/customers/metrics…` and `/customers/search` are routes.
    "not": {"pattern": r"^\s*(metrics|search)\s*$"},
}
_EMAIL_CHARACTER = rf"[^@\s{FORBIDDEN_CLASS}]"
EMAIL_SCHEMA = {
    "maxLength": EMAIL_MAX,
    "pattern": rf"^{_EMAIL_CHARACTER}+@{_EMAIL_CHARACTER}+\.[^@\s.{FORBIDDEN_CLASS}]+$",
}
CustomerId = Annotated[LabelStr, Documented(**CUSTOMER_ID_SCHEMA)]
Name = Annotated[CleanStr, Documented(maxLength=NAME_MAX)]
Email = Annotated[CleanStr, Documented(**EMAIL_SCHEMA)]


class CustomerCreate(BaseModel):
    model_config = STRICT

    customer_id: CustomerId | None = Field(
        default=None,
        description="Your id for the customer; `CUSTOMER-NNN` when omitted.",
        examples=["acme-42"],
    )
    name: Name | None = Field(default=None, examples=["Acme Inc"])
    email: Email | None = Field(default=None, examples=["billing@acme.example"])


class CustomerReplace(BaseModel):
    """PUT body: the whole customer; fields left out become null."""

    model_config = STRICT

    name: Name | None = None
    email: Email | None = None


class CustomerUpdate(BaseModel):
    """PATCH body: only the fields sent change."""

    model_config = STRICT

    name: Name | None = None
    email: Email | None = None


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
