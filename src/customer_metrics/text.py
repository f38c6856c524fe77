"""Text rules shared by every schema: what a string may hold, and how names are normalised
and compared."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, GetJsonSchemaHandler, PlainSerializer
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from customer_metrics.clock import format_timestamp

# Lone surrogates and control characters other than tab, newline and carriage return
# (NUL included): PostgreSQL rejects some of these with a 500 and SQLite truncates at NUL.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def check_characters(value: str) -> str:
    match = _FORBIDDEN.search(value)
    if match:
        raise PydanticCustomError(
            "string_invalid_character",
            "String holds a forbidden character ({character}) at position {position}: control "
            "characters other than tab, newline and carriage return, and lone surrogates, are "
            "not accepted",
            {"character": f"U+{ord(match.group()):04X}", "position": match.start()},
        )
    return value


def is_clean(value: str) -> bool:
    return _FORBIDDEN.search(value) is None


def normalize_label(value: str) -> str:
    """Names, keys, units and customer ids: NFC and trimmed."""
    return unicodedata.normalize("NFC", value).strip()


def comparison_key(name: str) -> str:
    """What makes two names the same: compatibility forms (width, NFC/NFD) and case folded."""
    return unicodedata.normalize("NFKC", name).casefold()


def _normalize_checked(value: str) -> str:
    return normalize_label(check_characters(value))


class Documented:
    """JSON Schema keywords for the OpenAPI document only. The rule itself is enforced
    elsewhere (a validator with its own error type, a service against a configurable limit);
    the document still says it, so that a client, or a fuzzer, knows what is accepted."""

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.update(self.keywords)
        return schema


# The forbidden characters as a JSON Schema (ECMA-262) class. Lone surrogates cannot be written
# in a pattern; they are refused all the same.
FORBIDDEN_CLASS = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f"
CLEAN_PATTERN = rf"^[^{FORBIDDEN_CLASS}]*$"
# A label is trimmed, so it holds at least one character that is not white space.
LABEL_PATTERN = rf"^[^{FORBIDDEN_CLASS}]*[^\s{FORBIDDEN_CLASS}][^{FORBIDDEN_CLASS}]*$"

CleanStr = Annotated[str, AfterValidator(check_characters), Documented(pattern=CLEAN_PATTERN)]
LabelStr = Annotated[str, AfterValidator(_normalize_checked), Documented(pattern=LABEL_PATTERN)]

Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]
