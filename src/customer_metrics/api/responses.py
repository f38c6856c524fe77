"""JSON responses that keep exact decimals: a NUMBER value goes out as a JSON number with
exactly the digits it was stored with (Pydantic would turn a Decimal into a string or a float)."""

from __future__ import annotations

from typing import Any

import simplejson
from fastapi.responses import JSONResponse


class ExactJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return simplejson.dumps(
            content, use_decimal=True, ensure_ascii=True, separators=(",", ":")
        ).encode("ascii")
