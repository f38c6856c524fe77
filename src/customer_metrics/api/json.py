"""Strict JSON parsing for request bodies: no NaN/Infinity, no duplicate keys, bounded depth.
Every rejection is a `JSONDecodeError`, which FastAPI answers as 422 `json_invalid`."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

MAX_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise json.JSONDecodeError(f"duplicate key {key!r}", key, 0)
            seen.add(key)
    return result


def _depth_exceeds(text: str, limit: int) -> bool:
    # A cheap upper bound (brackets inside strings count too); exact only when it matters.
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def loads(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise json.JSONDecodeError("body is not UTF-8", "", error.start) from None
    if _depth_exceeds(text, MAX_DEPTH):
        raise json.JSONDecodeError(f"nested deeper than {MAX_DEPTH} levels", "", 0)
    # Decimals, not floats: a NUMBER keeps every digit it was sent with, and 1e400 stays a
    # (too large) number instead of becoming infinity.
    return json.loads(
        text,
        parse_float=Decimal,
        parse_constant=_reject_constant,
        object_pairs_hook=_no_duplicates,
    )
