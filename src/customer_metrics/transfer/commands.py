"""The `import` and `export` commands, with Rich progress."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from customer_metrics.settings import get_settings
from customer_metrics.transfer.connection import api_client
from customer_metrics.transfer.exporter import export_rows, write_export
from customer_metrics.transfer.importer import ImportSummary, import_rows
from customer_metrics.transfer.rows import detect_format, read_rows

# soft_wrap: summary lines stay whole, whatever the terminal width (scripts parse them).
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

Url = Annotated[str | None, typer.Option(help="A running server, e.g. http://127.0.0.1:8000.")]
ApiKey = Annotated[str | None, typer.Option(help="API key for --url.", envvar="CM_API_KEY")]
Org = Annotated[int | None, typer.Option("--org", help="Organization id (local database).")]
Format = Annotated[str | None, typer.Option("--format", help="csv or ndjson (default: by suffix).")]


def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    url: Url = None,
    api_key: ApiKey = None,
    org: Org = None,
    fmt: Format = None,
    chunk_size: Annotated[int, typer.Option(min=1, max=10_000)] = 5000,
    rejects: Annotated[Path | None, typer.Option(help="Where rejected rows go.")] = None,
) -> None:
    """Import values (columns customer_id, metric, value, observed_at, source) from CSV or
    NDJSON. Safe to re-run after an interruption: finished chunks are not stored twice."""
    kind = detect_format(file, fmt)
    rejects_path = rejects or file.with_name(file.name + ".rejected.ndjson")
    started = time.monotonic()
    total = file.stat().st_size

    async def run() -> ImportSummary:
        with (
            file.open("rb") as raw,
            io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle,
            rejects_path.open("w", encoding="utf-8") as rejected,
            _progress() as progress,
        ):
            task = progress.add_task("importing", total=total, rows="0", rate="0", bad="0")

            def show(summary: ImportSummary) -> None:
                elapsed = max(time.monotonic() - started, 1e-6)
                progress.update(
                    task,
                    completed=raw.tell() if not raw.closed else total,
                    rows=f"{summary.rows:,}",
                    rate=f"{summary.rows / elapsed:,.0f}",
                    bad=f"{summary.rejected:,}",
                )

            async with api_client(url, api_key, org, get_settings()) as client:
                summary = await import_rows(
                    client, read_rows(handle, kind), kind == "csv", chunk_size, rejected, show
                )
            progress.update(task, completed=total)
            return summary

    summary = _run(run)
    elapsed = time.monotonic() - started
    rate = summary.rows / max(elapsed, 1e-6)
    err.print(
        f"Read {summary.rows:,} rows in {elapsed:.1f}s ({rate:,.0f} rows/s): "
        f"{summary.accepted:,} stored, {summary.rejected:,} rejected"
        + (
            f", {summary.replayed_chunks} chunk(s) already imported before"
            if summary.replayed_chunks
            else ""
        )
        + "."
    )
    if summary.rejected:
        err.print(f"Rejected rows and their reasons: {rejects_path}")
    else:
        rejects_path.unlink(missing_ok=True)


def export_command(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default: stdout).")
    ] = None,
    history: Annotated[
        bool, typer.Option("--history", help="Every observation, not just current values.")
    ] = False,
    url: Url = None,
    api_key: ApiKey = None,
    org: Org = None,
    fmt: Format = None,
) -> None:
    """Export current values (or the full history) as CSV or NDJSON, streaming."""
    kind = fmt or (detect_format(output, None) if output else "csv")

    async def run() -> int:
        out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        try:
            with _progress() as progress:
                task = progress.add_task("exporting", total=None, rows="0", rate="", bad="0")
                count = 0

                def tick() -> None:
                    nonlocal count
                    count += 1
                    if count % 500 == 0:
                        progress.update(task, rows=f"{count:,}")

                async with api_client(url, api_key, org, get_settings()) as client:
                    return await write_export(export_rows(client, history), out, kind, tick)
        finally:
            if output:
                out.close()

    count = _run(run)
    err.print(f"Exported {count:,} rows.")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]} rows"),
        TextColumn("{task.fields[rate]} rows/s"),
        TextColumn("{task.fields[bad]} rejected"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def _run(coroutine_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(coroutine_factory())
    except ValueError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
