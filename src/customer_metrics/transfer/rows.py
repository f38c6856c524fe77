"""Reading value rows from CSV (with a header) or NDJSON, and typing CSV cells by the
metric's data_type so that `12` reaches an INTEGER metric as a number."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from customer_metrics.api.responses import loads_exact

COLUMNS = ("customer_id", "metric", "value", "observed_at", "source")
REQUIRED = ("customer_id", "metric", "value")
_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    item: dict[str, Any] | None
    error: str | None = None
    raw: str = ""


def detect_format(path: Path, given: str | None) -> str:
    if given:
        return given
    return "ndjson" if path.suffix.lower() in (".ndjson", ".jsonl") else "csv"


def read_rows(handle: TextIO, fmt: str) -> Iterator[Row]:
    yield from (_ndjson(handle) if fmt == "ndjson" else _csv(handle))


def _csv(handle: TextIO) -> Iterator[Row]:
    reader = csv.DictReader(handle)
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown:
        raise ValueError(
            f"CSV header must have {', '.join(REQUIRED)} (and may have observed_at, source); "
            f"missing {missing}, unknown {unknown}"
        )
    for record in reader:
        line = reader.line_num
        if None in record or any(v is None for v in record.values()):
            yield Row(line, None, "row does not have the header's number of columns", str(record))
            continue
        item = {k: v for k, v in record.items() if v != "" or k in REQUIRED}
        yield Row(line, item, None, json.dumps(record))


def _ndjson(handle: TextIO) -> Iterator[Row]:
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            item = loads_exact(text)
        except ValueError as error:
            yield Row(line, None, f"not valid JSON: {error}", text.rstrip("\n"))
            continue
        if not isinstance(item, dict):
            yield Row(line, None, "each line must be a JSON object", text.rstrip("\n"))
            continue
        yield Row(line, item, None, text.rstrip("\n"))


def type_cell(value: Any, data_type: str | None) -> Any:
    """CSV cells are text: give INTEGER and BOOLEAN metrics the JSON they expect. NUMBER keeps
    the text (a decimal string is exact); anything unparseable is left for the server to
    reject with its reason."""
    if not isinstance(value, str):
        return value
    if data_type == "INTEGER" and _INTEGER.match(value.strip()):
        return int(value)
    if data_type == "BOOLEAN" and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value
