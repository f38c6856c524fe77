"""The SQL the service runs for a request, and its `EXPLAIN (ANALYZE, BUFFERS)`.

The request goes through the real app in this process (`create_app` over httpx's ASGI
transport, on the same database and secret as the measured server) while every statement
its PostgreSQL connections execute is recorded as the SQL text and arguments sent to
asyncpg; then each statement that reads the value tables is explained with those arguments."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from customer_metrics.main import create_app
from customer_metrics.settings import Settings
from customer_metrics.storage import native

# Statements about these tables are the queries' own (not the key or metric lookups).
_TABLES = ("metric_values", "metric_current_values", "customers")


@dataclass(frozen=True)
class Statement:
    sql: str
    args: tuple[Any, ...]
    # What the service SETs LOCAL around it (`native.SETTINGS`), so the plan is the one it gets.
    settings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Plan:
    """One statement the request ran: its SQL (arguments inlined for reading) and plan."""

    sql: str
    lines: list[str]

    @property
    def execution_ms(self) -> float | None:
        for line in reversed(self.lines):
            if line.startswith("Execution Time:"):
                return float(line.split()[2])
        return None


@contextmanager
def _recording() -> Iterator[list[Statement]]:
    """Records what every NativeConnection.execute sends, while the block runs."""
    seen: list[Statement] = []
    original = native.NativeConnection.execute

    async def execute(self: native.NativeConnection, statement: Any, params: Any = None) -> Any:
        if params is None or isinstance(params, Mapping):
            compiled, extracted = native._compiled(statement, params)
            sql, args = compiled.arguments(params, extracted)
            seen.append(Statement(sql, tuple(args), native._settings_of(statement)))
        return await original(self, statement, params)

    native.NativeConnection.execute = execute  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        native.NativeConnection.execute = original  # type: ignore[method-assign]


async def _capture(
    url: str, data_dir: Path, headers: Mapping[str, str], method: str, path: str, **kwargs: Any
) -> list[Statement]:
    app = create_app(Settings(database_url=url, data_dir=data_dir))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            with _recording() as seen:
                response = await client.request(method, path, headers=dict(headers), **kwargs)
    if response.status_code != 200:
        raise RuntimeError(f"{method} {path} answered {response.status_code}: {response.text}")
    return [s for s in seen if any(t in s.sql for t in _TABLES)]


def _readable(sql: str, args: tuple[Any, ...]) -> str:
    """The SQL with $n replaced by the arguments' text, for the report only."""
    for n in range(len(args), 0, -1):
        value = args[n - 1]
        text = "NULL" if value is None else repr(value) if isinstance(value, str) else str(value)
        sql = sql.replace(f"${n}", text if len(text) < 200 else text[:200] + "…")
    return sql


async def _explain(url: str, statements: list[Statement]) -> list[Plan]:
    conn = await asyncpg.connect(url)
    try:
        plans = []
        for statement in statements:
            async with conn.transaction():
                if statement.settings:
                    await conn.execute(native._set_local(statement.settings))
                explain = "EXPLAIN (ANALYZE, BUFFERS) " + statement.sql
                rows = await conn.fetch(explain, *statement.args)
            lines = [str(r[0]) for r in rows]
            if statement.settings:
                shown = ", ".join(f"{name} = {value}" for name, value in statement.settings)
                lines.append(f"(run with SET LOCAL {shown}, as the service runs it)")
            plans.append(Plan(_readable(statement.sql, statement.args), lines))
        return plans
    finally:
        await conn.close()


def explain_request(
    url: str, data_dir: Path, headers: Mapping[str, str], method: str, path: str, **kwargs: Any
) -> list[Plan]:
    """Run one request in-process, then EXPLAIN (ANALYZE, BUFFERS) each value-table statement
    it ran (once more each, on a warm cache)."""

    async def run() -> list[Plan]:
        statements = await _capture(url, data_dir, headers, method, path, **kwargs)
        return await _explain(url, statements)

    return asyncio.run(run())
