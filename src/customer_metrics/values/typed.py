"""The data-type table of the contract: what JSON each data_type accepts, how it is stored,
and how it is given back. Exactness first: NUMBER is a Decimal end to end."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any

from customer_metrics.clock import format_timestamp
from customer_metrics.errors import InvalidRequest
from customer_metrics.text import check_characters

MAX_DIGITS = 38
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FUTURE_TOLERANCE = timedelta(minutes=5)

_DECIMAL_STRING = re.compile(r"^[+-]?\d+(\.\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
# The form the API returns and nearly every client sends, UTC to the millisecond: read by
# `datetime.fromisoformat` alone (a batch holds up to 10,000 of them).
_CANONICAL_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", re.ASCII)
# The same shape for the OpenAPI document, with each field's range: what is left for the server
# to refuse is a day its month lacks, an offset that leaves years 1-9999, or the future.
_YEAR = r"([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"  # 0001-9999
TIMESTAMP_PATTERN = (
    rf"^{_YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3])"
    r":[0-5][0-9]:[0-5][0-9](\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)

COLUMN_OF = {
    "NUMBER": "value_number",
    "INTEGER": "value_integer",
    "STRING": "value_text",
    "BOOLEAN": "value_boolean",
    "DATE": "value_date",
    "DATETIME": "value_datetime",
}
VALUE_COLUMNS = tuple(COLUMN_OF.values())


@dataclass(frozen=True, slots=True)
class TypedValue:
    column: str
    value: Decimal | int | str | bool | date | datetime

    def columns(self) -> dict[str, Any]:
        """Every value column, the one for this type set and the others cleared."""
        return {c: (self.value if c == self.column else None) for c in VALUE_COLUMNS}


def _invalid(loc: tuple[str | int, ...], msg: str, type_: str) -> InvalidRequest:
    return InvalidRequest(loc, msg, type_)


def exact_decimal(value: Decimal, loc: tuple[str | int, ...]) -> Decimal:
    """Plain notation (no exponent), no negative zero, at most 38 significant digits and
    38 digits on either side of the point."""
    if not value.is_finite():
        raise _invalid(loc, "Number must be finite", "finite_number")
    if value == 0:
        value = abs(value)
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    integer_digits = len(digits) + exponent
    if len(digits) > MAX_DIGITS or -exponent > MAX_DIGITS or integer_digits > MAX_DIGITS:
        raise _invalid(
            loc,
            f"Number must have at most {MAX_DIGITS} significant digits and at most "
            f"{MAX_DIGITS} digits on either side of the decimal point",
            "decimal_max_digits",
        )
    if exponent > 0:  # 1E+5 is written out as 100000, as PostgreSQL would give it back
        with localcontext() as context:
            context.prec = 2 * MAX_DIGITS
            value = value.quantize(Decimal(1))
    return value


def parse_number(raw: Any, loc: tuple[str | int, ...]) -> Decimal:
    if type(raw) is Decimal:  # a JSON number with a fraction or an exponent
        return exact_decimal(raw, loc)
    if isinstance(raw, bool):
        raise _invalid(loc, "Input should be a number, not a boolean", "decimal_type")
    if isinstance(raw, int):
        raw = Decimal(raw)
    elif isinstance(raw, str):
        if not _DECIMAL_STRING.match(raw):
            raise _invalid(
                loc, 'String should hold a plain decimal such as "1234.50"', "decimal_parsing"
            )
        raw = Decimal(raw)
    if not isinstance(raw, Decimal):
        raise _invalid(
            loc, "Input should be a number or a string holding a decimal", "decimal_type"
        )
    return exact_decimal(raw, loc)


def parse_integer(raw: Any, loc: tuple[str | int, ...]) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _invalid(loc, "Input should be an integer (no fraction, no exponent)", "int_type")
    if not INT64_MIN <= raw <= INT64_MAX:
        raise _invalid(loc, "Integer must fit in signed 64 bits", "int_range")
    return raw


def parse_timestamp(raw: Any, loc: tuple[str | int, ...]) -> datetime:
    """RFC 3339 with a zone → aware UTC datetime, truncated to milliseconds."""
    if type(raw) is str and len(raw) == 24 and _CANONICAL_TIMESTAMP.fullmatch(raw):
        try:
            return datetime.fromisoformat(raw)  # UTC already, and to the millisecond
        except ValueError:
            pass  # not a real instant: the general path says so
    return parse_any_timestamp(raw, loc)


def parse_any_timestamp(raw: Any, loc: tuple[str | int, ...]) -> datetime:
    """`parse_timestamp` for every form it accepts, without the shortcut for the usual one."""
    if not isinstance(raw, str):
        raise _invalid(loc, "Input should be an RFC 3339 timestamp string", "datetime_type")
    match = _TIMESTAMP.match(raw)
    if not match:
        raise _invalid(
            loc,
            "Timestamp must be RFC 3339 with a zone, such as 2025-11-27T10:06:09.459Z",
            "datetime_parsing",
        )
    whole, fraction, zone = match.groups()
    fraction = (fraction or ".0")[:7]
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        parsed = datetime.fromisoformat(
            f"{whole.replace('t', 'T').replace(' ', 'T')}{fraction}{zone}"
        )
        utc = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid(
            loc,
            "Timestamp is not a real instant (check month, day, hour, zone)",
            "datetime_parsing",
        ) from None
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def parse_date(raw: Any, loc: tuple[str | int, ...]) -> date:
    if not isinstance(raw, str) or not _DATE.match(raw):
        raise _invalid(loc, 'Input should be a date as "YYYY-MM-DD"', "date_parsing")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise _invalid(loc, "Not a real calendar date", "date_parsing") from None


def parse_value(
    data_type: str,
    raw: Any,
    loc: tuple[str | int, ...],
    allowed_values: list[str] | None,
    max_string: int,
) -> TypedValue:
    value = parse_typed(data_type, raw, loc, allowed_values, max_string)
    return TypedValue(COLUMN_OF[data_type], value)


def parse_typed(
    data_type: str,
    raw: Any,
    loc: tuple[str | int, ...],
    allowed_values: list[str] | None,
    max_string: int,
) -> Decimal | int | str | bool | date | datetime:
    """`parse_value` without the column: the stored value alone."""
    if data_type == "NUMBER":
        return parse_number(raw, loc)
    if data_type == "INTEGER":
        return parse_integer(raw, loc)
    if data_type == "BOOLEAN":
        if not isinstance(raw, bool):
            raise _invalid(loc, "Input should be true or false", "bool_type")
        return raw
    if data_type == "DATE":
        return parse_date(raw, loc)
    if data_type == "DATETIME":
        return parse_timestamp(raw, loc)
    if not isinstance(raw, str):
        raise _invalid(loc, "Input should be a string", "string_type")
    try:
        check_characters(raw)
    except ValueError as error:
        raise _invalid(loc, str(error), "string_invalid_character") from None
    if len(raw) > max_string:
        raise _invalid(
            loc, f"String should have at most {max_string} characters", "string_too_long"
        )
    if allowed_values is not None and raw not in allowed_values:
        raise _invalid(
            loc, f"Value must be one of the metric's allowed_values: {allowed_values}", "enum"
        )
    return raw


def check_observed_at(observed_at: datetime, now: datetime, loc: tuple[str | int, ...]) -> None:
    if observed_at > now + FUTURE_TOLERANCE:
        raise _invalid(loc, "observed_at may be at most 5 minutes in the future", "datetime_future")


def add(data_type: str, current: Any, increment: Any, loc: tuple[str | int, ...]) -> TypedValue:
    """current + increment, exactly; 0 stands in for a missing current value."""
    column = COLUMN_OF[data_type]
    if data_type == "INTEGER":
        step = parse_integer(increment, loc)
        total = (current or 0) + step
        if not INT64_MIN <= total <= INT64_MAX:
            raise _invalid(
                loc, "The incremented value would not fit in signed 64 bits", "int_range"
            )
        return TypedValue(column, total)
    step_decimal = parse_number(increment, loc) if not isinstance(increment, str) else None
    if step_decimal is None:
        raise _invalid(loc, "increment should be a number", "decimal_type")
    with localcontext() as context:
        context.prec = 3 * MAX_DIGITS
        try:
            total_decimal = (current or Decimal(0)) + step_decimal
        except InvalidOperation:
            raise _invalid(
                loc, "The incremented value is not a finite number", "finite_number"
            ) from None
    return TypedValue(column, exact_decimal(total_decimal, loc))


def to_json(data_type: str, value: Any) -> Any:
    """The stored value as the API gives it back (Decimal renders as a JSON number)."""
    if value is None:
        return None
    if data_type == "DATE":
        return value.isoformat()
    if data_type == "DATETIME":
        return format_timestamp(value)
    return value
