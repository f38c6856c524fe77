"""Opaque keyset cursors and the `limit` parameter shared by every list."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import Query

from customer_metrics.errors import InvalidRequest

Limit = Annotated[int, Query(ge=1, le=200, description="Page size (1-200).")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="Opaque cursor from `next_cursor`.")
]


def encode_cursor(position: Any) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, default: Any) -> Any:
    if cursor is None:
        return default
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidRequest(
            ("query", "cursor"), "Cursor is not one this API issued", "cursor_invalid"
        ) from None


def decode_int_cursor(cursor: str | None) -> int:
    """Cursors that carry the last id seen (0 before the first page)."""
    after = decode_cursor(cursor, 0)
    if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 2**63:
        raise InvalidRequest(
            ("query", "cursor"), "Cursor is not one this API issued", "cursor_invalid"
        )
    return after
