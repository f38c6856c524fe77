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

from customer_metrics.api.json import loads as strict_loads
from customer_metrics.metrics.refs import parse_ref

COLUMNS = ("customer_id", "metric", "value", "observed_at", "source")
REQUIRED = ("customer_id", "metric", "value")
FORMATS = ("csv", "ndjson")
_INTEGER = re.compile(r"^[+-]?\d+$")
# Bytes that are not UTF-8 reach the rows as these (the file is read with surrogateescape), so
# the row holding them is rejected alone instead of the read failing part-way through.
_UNDECODED = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    item: dict[str, Any] | None
    error: str | None = None
    raw: str = ""


def detect_format(path: Path | None, given: str | None) -> str:
    """`given` (csv or ndjson, any case), else by the file's suffix; CSV when there is none."""
    if given:
        fmt = given.lower()
        if fmt not in FORMATS:
            raise ValueError(f"--format must be csv or ndjson, not {given!r}")
        return fmt
    if path is not None and path.suffix.lower() in (".ndjson", ".jsonl"):
        return "ndjson"
    return "csv"


def metric_ref_key(ref: object) -> object:
    """One key for every way a row may name the same metric (`METRIC-005`, `METRIC-5`, `005`,
    `5`: the id; otherwise the key itself), as the server resolves refs."""
    if not isinstance(ref, str):
        return ref
    parsed = parse_ref(ref)
    if parsed is None:
        return ref
    return parsed.id if parsed.id is not None else parsed.key


def printable(text: str) -> str:
    """`text` with the bytes that were not UTF-8 shown as U+FFFD (for the rejects file)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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
            reason = "row does not have the header's number of columns"
            yield Row(line, None, reason, printable(str(record)))
            continue
        raw = json.dumps(record, ensure_ascii=False)
        if _UNDECODED.search(raw):
            yield Row(line, None, "row is not UTF-8 text", printable(raw))
            continue
        item = {k: v for k, v in record.items() if v != "" or k in REQUIRED}
        yield Row(line, item, None, raw)


def _ndjson(handle: TextIO) -> Iterator[Row]:
    for line, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        if _UNDECODED.search(text):
            yield Row(line, None, "row is not UTF-8 text", printable(text.rstrip("\n")))
            continue
        try:  # as strict as the API's own parsing: no NaN, no duplicate keys
            item = strict_loads(text.encode())
        except ValueError as error:
            yield Row(line, None, f"not valid JSON: {error}", text.rstrip("\n"))
            continue
        if not isinstance(item, dict):
            yield Row(line, None, "each line must be a JSON object", text.rstrip("\n"))
            continue
        yield Row(line, item, None, text.rstrip("\n"))


def type_cell(value: Any, data_type: str | None) -> Any:
    """CSV cells are text: give INTEGER and BOOLEAN metrics the JSON they expect. NUMBER keeps
    the text, trimmed (a decimal string is exact); anything unparseable is left for the
    server to reject with its reason."""
    if not isinstance(value, str):
        return value
    if data_type == "INTEGER" and _INTEGER.match(value.strip()):
        return int(value)
    if data_type == "BOOLEAN" and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if data_type == "NUMBER":
        return value.strip()  # spaces around a number, as for INTEGER and BOOLEAN cells
    return value
