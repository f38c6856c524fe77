"""Deriving a metric's machine key from its name: `"Customer Tier"` → `customer_tier`."""

from __future__ import annotations

import re
import unicodedata

KEY_MAX = 64
_NOT_KEY = re.compile(r"[^a-z0-9]+")


def base_key(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    key = _NOT_KEY.sub("_", ascii_name.lower()).strip("_")
    if not key:
        key = "metric"
    if not key[0].isalpha():
        key = "m_" + key
    return key[:KEY_MAX].rstrip("_")


def first_free(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    n = 2
    while True:
        suffix = f"_{n}"
        candidate = base[: KEY_MAX - len(suffix)].rstrip("_") + suffix
        if candidate not in taken:
            return candidate
        n += 1
