"""The `import` and `export` commands, with Rich progress."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.markup import escape
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
    NDJSON. Safe to re-run after an interruption with the same --chunk-size: finished chunks
    are not stored twice."""
    kind = _checked(lambda: detect_format(file, fmt))
    rejects_path = rejects or file.with_name(file.name + ".rejected.ndjson")
    started = time.monotonic()
    total = file.stat().st_size
    summary = ImportSummary()

    async def run() -> ImportSummary:
        rejects_path.unlink(missing_ok=True)  # an earlier run's: this run writes its own
        with (
            file.open("rb") as raw,
            # A byte-order mark is skipped; bytes that are not UTF-8 reject their row only.
            io.TextIOWrapper(
                raw, encoding="utf-8-sig", errors="surrogateescape", newline=""
            ) as handle,
            _LazyFile(rejects_path) as rejected,
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
                await import_rows(
                    client,
                    read_rows(handle, kind),
                    kind == "csv",
                    chunk_size,
                    rejected,
                    show,
                    summary,
                )
            progress.update(task, completed=total)
            return summary

    def stopped() -> None:
        if summary.rows:
            err.print(
                f"Stopped after reading {summary.rows:,} rows: {summary.accepted:,} stored, "
                f"{summary.rejected:,} rejected. Run the same command again to go on: "
                "chunks already stored are not stored twice."
            )
        if summary.rejected:
            err.print(f"Rejected rows so far and their reasons: {rejects_path}")

    _run(run, stopped)
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
    kind = _checked(lambda: detect_format(output, fmt))

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


class _LazyFile:
    """A text file created by its first write: a run that rejects nothing leaves none."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[str] | None = None

    def write(self, text: str) -> int:
        if self._file is None:
            self._file = self._path.open("w", encoding="utf-8")
        return self._file.write(text)

    def __enter__(self) -> _LazyFile:
        return self

    def __exit__(self, *_: object) -> None:
        if self._file is not None:
            self._file.close()


def _checked(make: Callable[[], T]) -> T:
    try:
        return make()
    except ValueError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from None


def _run(
    coroutine_factory: Callable[[], Coroutine[Any, Any, T]],
    stopped: Callable[[], None] = lambda: None,
) -> T:
    """Runs the command; what stops it is said in a line (no traceback), after `stopped`."""
    try:
        return asyncio.run(coroutine_factory())
    except json.JSONDecodeError as error:  # before ValueError, which it is
        message, code = f"the server's answer is not the API's JSON ({error})", 1
    except ValueError as error:
        message, code = str(error), 2
    except csv.Error as error:
        message, code = f"the file cannot be read as CSV: {error}", 1
    except httpx.HTTPStatusError as error:
        message, code = _refused(error.response), 1
    except httpx.TransportError as error:
        message, code = f"cannot reach the server ({type(error).__name__}: {error})", 1
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        message, code = f"{error.strerror or error}{where}", 1
    except KeyboardInterrupt:
        message, code = "interrupted", 130
    stopped()
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def _refused(response: httpx.Response) -> str:
    if response.status_code == 401:
        return "the server refused the API key (401)"
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    shown = detail if isinstance(detail, str) else response.reason_phrase
    return f"the server answered {response.status_code}: {shown}"
