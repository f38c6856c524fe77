"""How a client names a metric: `METRIC-005`, the key, or the numeric id."""

from __future__ import annotations

import re
from dataclasses import dataclass

_METRIC_ID = re.compile(r"^METRIC-(\d{1,18})$")
_NUMERIC = re.compile(r"^\d{1,18}$")
KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class MetricRef:
    id: int | None = None
    key: str | None = None


def parse_ref(ref: str) -> MetricRef | None:
    """None when `ref` cannot name any metric (so the caller answers 404)."""
    match = _METRIC_ID.match(ref)
    if match:
        return MetricRef(id=int(match.group(1)))
    if _NUMERIC.match(ref):
        return MetricRef(id=int(ref))
    if KEY_PATTERN.match(ref):
        return MetricRef(key=ref)
    return None


def format_metric_id(number: int) -> str:
    return f"METRIC-{number:03d}"
