"""Configurable length limits, checked by services (the schemas check shape and characters)."""

from __future__ import annotations

from dataclasses import dataclass

from customer_metrics.errors import InvalidRequest
from customer_metrics.settings import Settings

UNIT_MAX = 32
ALLOWED_VALUES_MAX = 500


@dataclass(frozen=True, slots=True)
class Limits:
    name: int = 100
    description: int = 2000
    string_value: int = 1000
    customer_id: int = 255

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            name=settings.max_name_length,
            description=settings.max_description_length,
            string_value=settings.max_string_value_length,
            customer_id=settings.max_customer_id_length,
        )


def check_length(loc: tuple[str | int, ...], value: str, maximum: int, minimum: int = 1) -> None:
    if len(value) < minimum:
        raise InvalidRequest(
            loc, f"String should have at least {minimum} character", "string_too_short"
        )
    if len(value) > maximum:
        raise InvalidRequest(
            loc, f"String should have at most {maximum} characters", "string_too_long"
        )
