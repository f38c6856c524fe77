"""`customer-metrics import`: stream a file through the batch endpoint in chunks, each with an
idempotency key derived from its content and position, so a re-run after an interruption
stores nothing twice."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from customer_metrics.api.responses import dumps_exact
from customer_metrics.transfer.rows import Row, metric_ref_key, type_cell

RETRIES = 8
BATCH_PATH = "/customers/metrics/values"
# A chunk's body stays below the server's default body limit (10 MiB), whatever the rows
# hold; a server with a lower limit answers 413, and the chunk is then sent in halves.
MAX_CHUNK_BYTES = 8 * 1024 * 1024
TOO_LARGE = {"type": "payload_too_large", "msg": "row is larger than the server's body limit"}


class Writer(Protocol):
    def write(self, text: str, /) -> int: ...


@dataclass
class ImportSummary:
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    chunks: int = 0
    replayed_chunks: int = 0


async def metric_types(client: httpx.AsyncClient) -> dict[object, str]:
    """data_type by metric, under `metric_ref_key` of its id and of its key."""
    types: dict[object, str] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200, "include_archived": "true"}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/customers/metrics", params=params)
        response.raise_for_status()
        page = response.json()
        for metric in page["data"]:
            for ref in (metric["metric_id"], metric["key"]):
                types[metric_ref_key(ref)] = metric["data_type"]
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
    rejects: Writer,
    on_progress: Callable[[ImportSummary], None],
    summary: ImportSummary | None = None,
) -> ImportSummary:
    """Sends the rows in chunks of at most `chunk_size` rows and MAX_CHUNK_BYTES of body;
    `summary` (given, it shows how far an interrupted import got) counts what happened."""
    summary = summary if summary is not None else ImportSummary()
    types = await metric_types(client) if is_csv else {}
    pending: list[Row] = []
    pending_bytes = 0

    async def send(chunk: list[Row]) -> None:
        items = [row.item for row in chunk if row.item is not None]
        answer = await send_chunk(client, items, chunk_key(summary.chunks, items))
        if answer.status_code == 413:  # the server takes smaller bodies
            if len(chunk) == 1:  # a row no chunk can carry: rejected, the import goes on
                _reject(summary, rejects, chunk[0], [TOO_LARGE])
                return
            half = len(chunk) // 2
            await send(chunk[:half])
            await send(chunk[half:])
            return
        answer.raise_for_status()
        body = answer.json()
        summary.chunks += 1
        summary.replayed_chunks += answer.headers.get("idempotent-replayed") == "true"
        summary.accepted += body["accepted"]
        for error in body["errors"]:
            _reject(summary, rejects, chunk[error["index"]], error["detail"])
        on_progress(summary)

    async def flush() -> None:
        nonlocal pending_bytes
        if pending:
            await send(pending)
        pending.clear()
        pending_bytes = 0

    for row in rows:
        summary.rows += 1
        if row.item is None:
            _reject(summary, rejects, row, [{"msg": row.error, "type": "row_invalid"}])
            continue
        if is_csv and "value" in row.item:
            data_type = types.get(metric_ref_key(row.item.get("metric")))
            row.item["value"] = type_cell(row.item["value"], data_type)
        size = len(dumps_exact(row.item).encode()) + 1
        if pending and pending_bytes + size > MAX_CHUNK_BYTES:
            await flush()
        pending.append(row)
        pending_bytes += size
        if len(pending) >= chunk_size:
            await flush()
    await flush()
    return summary


def _reject(
    summary: ImportSummary, rejects: Writer, row: Row, detail: list[dict[str, Any]]
) -> None:
    record = {
        "line": row.line,
        "row": row.item if row.item is not None else row.raw,
        "errors": detail,
    }
    rejects.write(dumps_exact(record) + "\n")
    summary.rejected += 1
