"""JSON responses that keep exact decimals: a NUMBER value goes out as a JSON number with
exactly the digits it was stored with, in plain notation (Pydantic would make a Decimal a
string or a float; `str(Decimal)` would write 1E-7). Rendered by orjson (UTF-8), with each
Decimal spliced in as a raw fragment."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import simplejson
from fastapi.responses import JSONResponse, Response


def _plain_decimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(format(value, "f"))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def render_exact(content: Any) -> bytes:
    try:
        return orjson.dumps(content, default=_plain_decimal)
    except TypeError:
        # orjson stops at 64-bit integers; a sum of INTEGER values can pass them.
        return simplejson.dumps(
            content, use_decimal=False, default=_wide_decimal, separators=(",", ":")
        ).encode()


def _wide_decimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return simplejson.RawJSON(format(value, "f"))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps_exact(content: Any) -> str:
    return render_exact(content).decode()


def loads_exact(text: str | bytes) -> Any:
    """JSON with every fractional number as a Decimal, so nothing is rounded on the way."""
    return simplejson.loads(text, use_decimal=True)


class ExactJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return render_exact(content)


class RawJSONResponse(Response):
    """JSON rendered already (by the database, for reads with many small rows): sent as is."""

    media_type = "application/json"
