"""`customer-metrics import` and `export` against the local database, on both backends."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from customer_metrics.cli import app as cli


@pytest.fixture
def org_env(backend, monkeypatch, tmp_path):
    monkeypatch.setenv("CM_DATA_DIR", str(backend.settings.data_dir))
    monkeypatch.setenv("CM_SECRET_KEY", backend.settings.secret_key)
    monkeypatch.setenv("CM_DATABASE_URL", backend.settings.database_url)
    runner = CliRunner()
    created = runner.invoke(cli, ["org", "create", "Transfer", "--json"])
    org = json.loads(created.stdout)["organization_id"]
    return str(org), runner


def _metric(runner, org, tmp_path, name, data_type):
    """Creates a metric through the same in-process API the import uses."""
    import asyncio

    from customer_metrics.settings import get_settings
    from customer_metrics.transfer.connection import api_client

    async def create():
        async with api_client(None, None, int(org), get_settings()) as client:
            response = await client.post(
                "/customers/metrics", json={"name": name, "data_type": data_type}
            )
            assert response.status_code == 201, response.text

    asyncio.run(create())


def _flat(text: str) -> str:
    return " ".join(text.split())


def _write_csv(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "metric", "value", "observed_at", "source"])
        writer.writerows(rows)


def _export(runner, org, tmp_path, *extra):
    out = tmp_path / "out.ndjson"
    result = runner.invoke(cli, ["export", "--org", org, "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_csv_import_stores_good_rows_reports_bad_ones_and_reruns_safely(org_env, tmp_path):
    org, runner = org_env
    _metric(runner, org, tmp_path, "Seats", "INTEGER")
    _metric(runner, org, tmp_path, "ARR", "NUMBER")
    _metric(runner, org, tmp_path, "Active", "BOOLEAN")
    rows = []
    for i in range(300):
        rows.append([f"c{i}", "seats", str(i), f"2024-01-01T00:00:00.{i % 1000:03d}Z", "billing"])
        rows.append([f"c{i}", "arr", f"{i}.50", "", ""])
    rows.append(["c1", "active", "TRUE", "2024-01-02T00:00:00Z", ""])
    rows.append(["c1", "seats", "many", "2024-01-02T00:00:00Z", ""])
    rows.append(["c2", "nope", "1", "", ""])
    source = tmp_path / "values.csv"
    _write_csv(source, rows)
    with source.open("a") as handle:
        handle.write("c3,seats\n")  # too few columns

    first = runner.invoke(cli, ["import", str(source), "--org", org, "--chunk-size", "128"])
    assert first.exit_code == 0, first.output
    assert "601 stored, 3 rejected" in _flat(first.stderr)
    rejected = [
        json.loads(line)
        for line in (tmp_path / "values.csv.rejected.ndjson").read_text().splitlines()
    ]
    assert sorted(r["line"] for r in rejected) == [603, 604, 605]
    assert {e["type"] for r in rejected for e in r["errors"]} == {
        "int_type",
        "not_found",
        "row_invalid",
    }

    again = runner.invoke(cli, ["import", str(source), "--org", org, "--chunk-size", "128"])
    assert again.exit_code == 0
    assert "already imported before" in _flat(again.stderr)

    history = _export(runner, org, tmp_path, "--history")
    assert len(history) == 601  # nothing stored twice, not even the rows observed "now"
    current = {(r["customer_id"], r["metric"]): r["value"] for r in _export(runner, org, tmp_path)}
    assert current[("c7", "seats")] == 7
    assert current[("c7", "arr")] == 7.5
    assert current[("c1", "active")] is True


def test_ndjson_round_trip_keeps_exact_decimals(org_env, tmp_path):
    org, runner = org_env
    _metric(runner, org, tmp_path, "ARR", "NUMBER")
    source = tmp_path / "values.ndjson"
    source.write_text(
        '{"customer_id": "a", "metric": "arr", "value": 12345678901234567890.12, '
        '"observed_at": "2024-01-01T00:00:00Z"}\n'
        '{"customer_id": "b", "metric": "arr", "value": 0.0000001}\n'
        "not json\n"
    )
    result = runner.invoke(cli, ["import", str(source), "--org", org])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out.ndjson"
    runner.invoke(cli, ["export", "--org", org, "-o", str(out)])
    text = out.read_text()
    assert '"value":12345678901234567890.12' in text
    assert '"value":0.0000001' in text
    csv_out = tmp_path / "out.csv"
    runner.invoke(cli, ["export", "--org", org, "-o", str(csv_out)])
    assert "12345678901234567890.12" in csv_out.read_text()


def test_import_needs_a_target(backend, monkeypatch, tmp_path):
    monkeypatch.setenv("CM_DATA_DIR", str(backend.settings.data_dir))
    source = tmp_path / "v.csv"
    _write_csv(source, [])
    result = CliRunner().invoke(cli, ["import", str(source)])
    assert result.exit_code == 2
    assert "--org" in result.stderr


def test_csv_with_a_wrong_header_is_refused(org_env, tmp_path):
    org, runner = org_env
    source = tmp_path / "v.csv"
    source.write_text("customer,metric,value\na,b,1\n")
    result = runner.invoke(cli, ["import", str(source), "--org", org])
    assert result.exit_code == 2
    assert "customer_id" in result.stderr


def test_local_mode_writes_keep_their_transaction(org_env, tmp_path):
    """The in-process client of `--org` stands in for the key lookup; an atomic batch through
    it must still store nothing when one item fails late (an overflowing increment)."""
    import asyncio

    from customer_metrics.settings import get_settings
    from customer_metrics.transfer.connection import api_client

    org, runner = org_env
    _metric(runner, org, tmp_path, "Seats", "INTEGER")

    async def run():
        async with api_client(None, None, int(org), get_settings()) as client:
            await client.post("/customers/a/metrics/seats/values", json={"value": 2**63 - 1})
            items = [
                {"customer_id": "b", "metric": "seats", "value": 1},
                {"customer_id": "a", "metric": "seats", "increment": 1},
            ]
            response = await client.post(
                "/customers/metrics/values", json={"values": items, "atomic": True}
            )
            customer_b = await client.get("/customers/b")
            return response.status_code, customer_b.status_code

    assert asyncio.run(run()) == (422, 404)
