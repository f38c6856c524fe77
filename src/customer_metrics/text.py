"""Text rules shared by every schema: what a string may hold, and how names are normalised
and compared."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer
from pydantic_core import PydanticCustomError

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


CleanStr = Annotated[str, AfterValidator(check_characters)]
LabelStr = Annotated[str, AfterValidator(_normalize_checked)]

Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]
