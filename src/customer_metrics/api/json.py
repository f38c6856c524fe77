"""Strict JSON parsing for request bodies: no NaN/Infinity, no duplicate keys, bounded depth.
Every rejection is a `JSONDecodeError`, which FastAPI answers as 422 `json_invalid`."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from itertools import accumulate
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


# A JSON string, escapes included; what is left once strings are cut out holds the brackets.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_NOT_BRACKETS = bytes(code for code in range(256) if code not in _STEP)


def _depth_exceeds(body: bytes, limit: int) -> bool:
    # Cheap upper bounds first, counting brackets inside strings too: the bracket count, then
    # the deepest running sum over the brackets alone (both at C speed; UTF-8 never hides an
    # ASCII byte inside another character). Only a body that fails them is measured exactly,
    # with strings cut out.
    if body.count(b"[") + body.count(b"{") <= limit or _max_depth(body) <= limit:
        return False
    return _max_depth(_STRING.sub(b"", body)) > limit


def _max_depth(body: bytes) -> int:
    brackets = body.translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def loads(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise json.JSONDecodeError("body is not UTF-8", "", error.start) from None
    if _depth_exceeds(body, MAX_DEPTH):
        raise json.JSONDecodeError(f"nested deeper than {MAX_DEPTH} levels", "", 0)
    # Decimals, not floats: a NUMBER keeps every digit it was sent with, and 1e400 stays a
    # (too large) number instead of becoming infinity.
    return json.loads(
        text,
        parse_float=Decimal,
        parse_constant=_reject_constant,
        object_pairs_hook=_no_duplicates,
    )
