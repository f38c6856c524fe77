"""`customer-metrics import`: stream a file through the batch endpoint in chunks, each with an
idempotency key derived from its content and position, so a re-run after an interruption
stores nothing twice."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from customer_metrics.api.responses import dumps_exact
from customer_metrics.transfer.rows import Row, type_cell

RETRIES = 8
BATCH_PATH = "/customers/metrics/values"


@dataclass
class ImportSummary:
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    chunks: int = 0
    replayed_chunks: int = 0
    rejects: list[dict[str, Any]] = field(default_factory=list)


async def metric_types(client: httpx.AsyncClient) -> dict[str, str]:
    """data_type by every way a row may name a metric: METRIC-005, 5, key."""
    types: dict[str, str] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200, "include_archived": "true"}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/customers/metrics", params=params)
        response.raise_for_status()
        page = response.json()
        for metric in page["data"]:
            for ref in (metric["metric_id"], str(metric["id"]), metric["key"]):
                types[ref] = metric["data_type"]
        cursor = page["next_cursor"]
        if not cursor:
            return types


def chunk_key(index: int, items: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256(dumps_exact(items).encode()).hexdigest()
    return f"import-{index}-{digest[:48]}"


async def send_chunk(
    client: httpx.AsyncClient, items: list[dict[str, Any]], key: str
) -> httpx.Response:
    """Retries what a retry can fix (network errors, 5xx, 409 in progress) with the same key."""
    delay = 0.5
    for attempt in range(RETRIES):
        try:
            response = await client.post(
                BATCH_PATH,
                content=dumps_exact({"values": items}),
                headers={"Idempotency-Key": key, "Content-Type": "application/json"},
            )
        except httpx.TransportError:
            if attempt == RETRIES - 1:
                raise
        else:
            if response.status_code < 500 and response.status_code not in (409, 429):
                return response
            if attempt == RETRIES - 1:
                response.raise_for_status()
                return response
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10)
    raise AssertionError("unreachable")


async def import_rows(
    client: httpx.AsyncClient,
    rows: Iterable[Row],
    is_csv: bool,
    chunk_size: int,
    rejects: TextIO,
    on_progress: Callable[[ImportSummary], None],
) -> ImportSummary:
    summary = ImportSummary()
    types = await metric_types(client) if is_csv else {}
    pending: list[Row] = []

    async def flush() -> None:
        if not pending:
            return
        items = [row.item for row in pending if row.item is not None]
        answer = await send_chunk(client, items, chunk_key(summary.chunks, items))
        answer.raise_for_status()
        body = answer.json()
        summary.chunks += 1
        summary.replayed_chunks += answer.headers.get("idempotent-replayed") == "true"
        summary.accepted += body["accepted"]
        for error in body["errors"]:
            row = pending[error["index"]]
            _reject(summary, rejects, row, error["detail"])
        pending.clear()
        on_progress(summary)

    for row in rows:
        summary.rows += 1
        if row.item is None:
            _reject(summary, rejects, row, [{"msg": row.error, "type": "row_invalid"}])
            continue
        if is_csv and "value" in row.item:
            row.item["value"] = type_cell(row.item["value"], types.get(str(row.item.get("metric"))))
        pending.append(row)
        if len(pending) >= chunk_size:
            await flush()
    await flush()
    return summary


def _reject(
    summary: ImportSummary, rejects: TextIO, row: Row, detail: list[dict[str, Any]]
) -> None:
    summary.rejected += 1
    record = {
        "line": row.line,
        "row": row.item if row.item is not None else row.raw,
        "errors": detail,
    }
    rejects.write(dumps_exact(record) + "\n")
