"""`customer-metrics import` of 100,000 rows, killed (`kill -9`) part-way and run again: the
good rows end up stored exactly once, the chunks finished before the kill are replayed rather
than stored again, and the rejects file lists exactly the bad rows.

The full 100,000 rows (1% bad): an import of them takes about 5 s here on either backend,
and the whole test under 25 s."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.process.conftest import CLI_TIMEOUT_SECONDS, ServerProcess, _executable

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("process")]

CUSTOMERS = 250
INSTANTS = 200
ROWS = CUSTOMERS * 2 * INSTANTS  # two metrics: 100,000 rows
BAD_EVERY = 100  # 1%: every row with index 7 (mod 100) is an INTEGER "bad"
CHUNK = 5000
GOOD_PER_CHUNK = CHUNK - CHUNK // BAD_EVERY
KILL_AFTER_STORED = 2 * GOOD_PER_CHUNK  # kill the importer once two chunks are stored
EPOCH = datetime(2025, 3, 1, tzinfo=UTC)
SOURCE = "crm"


def _timestamp(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


def _row(index: int) -> dict[str, str]:
    """Rows in time order, every chunk spanning every customer; `spend` (NUMBER) on even and
    `logins` (INTEGER) on odd indexes, so every bad row is an INTEGER one."""
    instant, rest = divmod(index, CUSTOMERS * 2)
    customer, odd = divmod(rest, 2)
    observed_at = _timestamp(EPOCH + timedelta(minutes=instant))
    if odd:
        value = "bad" if index % BAD_EVERY == 7 else str(customer * 1000 + instant)
        metric = "logins"
    else:
        value, metric = f"{customer}.{instant % 100:02d}", "spend"
    return {
        "customer_id": f"imp-{customer:04d}",
        "metric": metric,
        "value": value,
        "observed_at": observed_at,
        "source": SOURCE,
    }


def _write_csv(path: Path) -> tuple[set[tuple[str, ...]], set[int]]:
    """Writes the file; returns the good rows as (customer_id, metric, value, observed_at,
    source) and the CSV line numbers of the bad ones (the header is line 1)."""
    good: set[tuple[str, ...]] = set()
    bad_lines: set[int] = set()
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(_row(0)))
        writer.writeheader()
        for index in range(ROWS):
            row = _row(index)
            writer.writerow(row)
            if row["value"] == "bad":
                bad_lines.add(index + 2)
            else:
                good.add(tuple(row.values()))
    return good, bad_lines


def _ingested(server: ServerProcess) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=5.0).text
    found = re.search(r'^cm_values_ingested_total\{path="batch"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _importer(server: ServerProcess, csv_path: Path, api_key: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            _executable(),
            "import",
            str(csv_path),
            "--url",
            server.base_url,
            "--api-key",
            api_key,
            "--chunk-size",
            str(CHUNK),
        ],
        cwd=server.workdir,
        env=server.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


async def _observations(
    client: httpx.AsyncClient, customer_id: str, key: str, gate: asyncio.Semaphore
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        async with gate:
            page = await client.get(f"/customers/{customer_id}/metrics/{key}/values", params=params)
        assert page.status_code == 200, page.text
        found += page.json()["data"]
        if page.json()["next_cursor"] is None:
            return found
        params["cursor"] = page.json()["next_cursor"]


async def test_import_killed_part_way_then_rerun_stores_every_good_row_once(
    server: ServerProcess, tmp_path: Path
):
    org = server.create_org("Import resume")
    async with server.client(org["api_key"]) as client:
        for name, data_type in (("Spend", "NUMBER"), ("Logins", "INTEGER")):
            created = await client.post(
                "/customers/metrics", json={"name": name, "data_type": data_type}
            )
            assert created.status_code == 201, created.text

    csv_path = tmp_path / "values.csv"
    good, bad_lines = _write_csv(csv_path)
    assert (len(good), len(bad_lines)) == (99_000, 1_000)
    rejects_path = tmp_path / "values.csv.rejected.ndjson"

    # First run: SIGKILL once two chunks are stored, mid-way through the next one.
    started = time.monotonic()
    first = _importer(server, csv_path, org["api_key"])
    try:
        while _ingested(server) < KILL_AFTER_STORED:
            assert first.poll() is None, f"importer ended before the kill:\n{first.communicate()}"
            assert time.monotonic() - started < CLI_TIMEOUT_SECONDS, "import made no progress"
            time.sleep(0.02)
        time.sleep(0.1)  # into the next chunk: read, sent, or being stored
        assert first.poll() is None, "importer finished before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
    killed_after = time.monotonic() - started
    # The chunk in flight at the kill may still finish on the server (a chunk takes ~0.3s
    # here): wait until the count has not moved for a second.
    stored_by_first = _ingested(server)
    while True:
        time.sleep(1.0)
        settled = _ingested(server)
        if settled == stored_by_first:
            break
        stored_by_first = settled
    assert stored_by_first % GOOD_PER_CHUNK == 0, stored_by_first
    assert first.returncode == -signal.SIGKILL
    assert stored_by_first < len(good), "the first run finished everything: kill it earlier"

    rerun_started_at = datetime.now(UTC)
    started = time.monotonic()
    second = _importer(server, csv_path, org["api_key"])
    out, err = second.communicate(timeout=CLI_TIMEOUT_SECONDS * 2)
    rerun_seconds = time.monotonic() - started
    assert second.returncode == 0, out + err
    summary = " ".join(err.split())
    # The re-run reads the whole file and accounts for every row ...
    assert f"Read {ROWS:,} rows" in summary, summary
    assert f"{len(good):,} stored, {len(bad_lines):,} rejected" in summary, summary
    # ... and tells that the chunks finished before the kill were not imported again.
    replayed = re.search(r"(\d+) chunk\(s\) already imported before", summary)
    assert replayed, summary
    assert int(replayed.group(1)) == stored_by_first // GOOD_PER_CHUNK >= 2, summary

    # The rejects file lists exactly the bad rows, each with the server's reason.
    rejects = [json.loads(line) for line in rejects_path.read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == sorted(bad_lines)
    assert {r["row"]["value"] for r in rejects} == {"bad"}
    assert all(r["errors"] and r["errors"][0]["loc"][-1] == "value" for r in rejects), rejects[:3]

    # Every good row is stored, once, with its value; nothing else is.
    exported_path = tmp_path / "export.csv"
    started = time.monotonic()
    export = server.cli(
        "export",
        "--url",
        server.base_url,
        "--api-key",
        org["api_key"],
        "--history",
        "-o",
        str(exported_path),
    )
    export_seconds = time.monotonic() - started
    assert export.returncode == 0, export.stdout + export.stderr
    with exported_path.open(newline="") as handle:
        exported = [
            (r["customer_id"], r["metric"], r["value"], r["observed_at"], r["source"])
            for r in csv.DictReader(handle)
        ]
    assert len(exported) == len(good)
    doubled = [row for row, n in Counter(exported).items() if n > 1]
    assert not doubled, doubled[:5]
    assert set(exported) == good

    # Stored once: what the first run stored kept its recorded_at (the re-run replayed those
    # chunks instead of writing them again), and the re-run stored the rest.
    gate = asyncio.Semaphore(8)
    async with server.client(org["api_key"]) as client:
        pages = await asyncio.gather(
            *(
                _observations(client, customer, key, gate)
                for customer in sorted({row[0] for row in good})
                for key in ("spend", "logins")
            )
        )
    recorded = [o["recorded_at"] for page in pages for o in page]
    assert len(recorded) == len(good)
    before = sum(1 for r in recorded if r < _timestamp(rerun_started_at))
    assert before == stored_by_first, (before, stored_by_first)
    stored_by_rerun = len(good) - stored_by_first
    print(
        f"first run: SIGKILL after {killed_after:.1f}s with {stored_by_first:,.0f} rows stored; "
        f"re-run: {ROWS:,} rows in {rerun_seconds:.1f}s, {stored_by_rerun:,.0f} of them stored "
        f"anew ({stored_by_rerun / rerun_seconds:,.0f} rows/s stored, process start included; "
        f"the importer says: {summary[summary.index('Read ') :]}); "
        f"export --history of {len(exported):,} rows: {export_seconds:.1f}s"
    )


def test_a_refused_key_is_said_in_a_line_and_leaves_no_rejects_file(
    server: ServerProcess, tmp_path: Path
):
    csv_path = tmp_path / "values.csv"
    csv_path.write_text("customer_id,metric,value\na,spend,1\n")
    for command in (["import", str(csv_path)], ["export"]):
        done = subprocess.run(
            [_executable(), *command, "--url", server.base_url, "--api-key", "cm_not_a_key"],
            cwd=server.workdir,
            env=server.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
        )
        assert done.returncode == 1, done.stderr
        assert "the server refused the API key (401)" in " ".join(done.stderr.split())
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "values.csv.rejected.ndjson").exists()
