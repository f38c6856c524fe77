"""`customer-metrics export`: current values or full history, streamed page by page to CSV
or NDJSON (memory stays flat whatever the size). Both read the values' history: a current
value is its customer and metric's newest observation."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any, TextIO
from urllib.parse import quote

import httpx

from customer_metrics.api.responses import dumps_exact, loads_exact
from customer_metrics.transfer.rows import COLUMNS


async def _pages(
    client: httpx.AsyncClient, path: str, params: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    cursor = None
    while True:
        query = {**params, "limit": 200, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query)
        response.raise_for_status()
        page = loads_exact(response.content)
        for entry in page["data"]:
            yield entry
        cursor = page.get("next_cursor")
        if not cursor:
            return


async def _newest(client: httpx.AsyncClient, path: str) -> dict[str, Any] | None:
    response = await client.get(path, params={"limit": 1})
    response.raise_for_status()
    data = loads_exact(response.content)["data"]
    return data[0] if data else None


async def export_rows(client: httpx.AsyncClient, history: bool) -> AsyncIterator[dict[str, Any]]:
    """Every customer's observations of every metric (archived ones too), newest first; or,
    for current values, each one's newest observation: the whole stored row, `source`
    included, so importing an export again writes the same observations back."""
    metrics = [m async for m in _pages(client, "/customers/metrics", {"include_archived": "true"})]
    async for customer in _pages(client, "/customers", {}):
        customer_id = customer["customer_id"]
        quoted = quote(customer_id, safe="")
        for metric in metrics:
            path = f"/customers/{quoted}/metrics/{metric['key']}/values"
            if history:
                observations = _pages(client, path, {})
            else:
                observations = _one(await _newest(client, path))
            async for obs in observations:
                yield {
                    "customer_id": customer_id,
                    "metric": metric["key"],
                    "value": obs["value"],
                    "observed_at": obs["observed_at"],
                    "source": obs["source"],
                }


async def _one(found: dict[str, Any] | None) -> AsyncIterator[dict[str, Any]]:
    if found is not None:
        yield found


async def write_export(
    rows: AsyncIterator[dict[str, Any]], out: TextIO, fmt: str, on_row: Callable[[], None]
) -> int:
    count = 0
    writer = (
        csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore") if fmt == "csv" else None
    )
    if writer:
        writer.writeheader()
    async for row in rows:
        if writer:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        else:
            out.write(dumps_exact(row) + "\n")
        count += 1
        on_row()
    return count


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    return "" if value is None else value
