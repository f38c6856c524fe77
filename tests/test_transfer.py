"""`customer-metrics import` and `export` against the local database, on both backends."""

from __future__ import annotations

import csv
import json
import re

import pytest
from typer.testing import CliRunner

from customer_metrics.cli import app as cli
from tests.conftest import create_postgres_database, drop_postgres_database


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


def test_import_needs_a_target_when_the_local_database_has_several_organizations(org_env, tmp_path):
    _org, runner = org_env
    runner.invoke(cli, ["org", "create", "Other", "--json"])
    source = tmp_path / "v.csv"
    _write_csv(source, [["a", "seats", "1", "", ""]])
    result = runner.invoke(cli, ["import", str(source)])
    assert result.exit_code == 2
    said = _flat(result.stderr)
    found = re.search(r"the local database has (\d+) organizations: give --org ID", said)
    assert found is not None, said
    assert int(found.group(1)) >= 2
    assert "Traceback" not in result.output
    assert not (tmp_path / "v.csv.rejected.ndjson").exists()


@pytest.fixture
def lone_org_env(backend, monkeypatch, tmp_path):
    """A database of its own holding a single organization (the backend's is shared)."""
    monkeypatch.setenv("CM_DATA_DIR", str(tmp_path / "lone"))
    monkeypatch.setenv("CM_SECRET_KEY", backend.settings.secret_key)
    url = None
    if backend.name == "sqlite":
        monkeypatch.delenv("CM_DATABASE_URL", raising=False)
    else:
        url = create_postgres_database()
        monkeypatch.setenv("CM_DATABASE_URL", url)
    try:
        runner = CliRunner()
        assert runner.invoke(cli, ["migrate"]).exit_code == 0
        created = runner.invoke(cli, ["org", "create", "Lone", "--json"])
        yield str(json.loads(created.stdout)["organization_id"]), runner
    finally:
        if url:
            drop_postgres_database(url)


def test_without_org_the_local_databases_only_organization_is_used(lone_org_env, tmp_path):
    org, runner = lone_org_env
    _metric(runner, org, tmp_path, "Seats", "INTEGER")
    source = tmp_path / "v.csv"
    _write_csv(source, [["a", "seats", "3", "2024-01-01T00:00:00Z", ""]])
    result = runner.invoke(cli, ["import", str(source)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out.ndjson"
    assert runner.invoke(cli, ["export", "-o", str(out)]).exit_code == 0
    assert [json.loads(line)["value"] for line in out.read_text().splitlines()] == [3]


def test_an_unknown_organization_or_unmigrated_database_is_a_message(
    backend, monkeypatch, tmp_path
):
    monkeypatch.setenv("CM_DATA_DIR", str(tmp_path / "fresh"))  # an embedded file, never migrated
    monkeypatch.delenv("CM_DATABASE_URL", raising=False)
    source = tmp_path / "v.csv"
    _write_csv(source, [["a", "seats", "1", "", ""]])
    unmigrated = CliRunner().invoke(cli, ["import", str(source), "--org", "1"])
    assert unmigrated.exit_code == 2
    assert "customer-metrics migrate" in _flat(unmigrated.stderr)

    monkeypatch.setenv("CM_DATA_DIR", str(backend.settings.data_dir))
    monkeypatch.setenv("CM_DATABASE_URL", backend.settings.database_url)
    monkeypatch.setenv("CM_SECRET_KEY", backend.settings.secret_key)
    for command in (["import", str(source)], ["export"]):
        result = CliRunner().invoke(cli, [*command, "--org", "999"])
        assert result.exit_code == 2, result.output
        assert "no organization 999" in _flat(result.stderr)
        assert "Traceback" not in result.output


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


def _history(runner, org, tmp_path):
    return sorted(
        (r["customer_id"], r["metric"], r["observed_at"], str(r["value"]), r["source"])
        for r in _export(runner, org, tmp_path, "--history")
    )


@pytest.mark.parametrize("suffix", ["csv", "ndjson"])
def test_a_current_values_export_imports_again_unchanged(org_env, tmp_path, suffix):
    """Each current value is exported as it is stored, `source` included, archived metrics
    too: importing the export again changes nothing."""
    org, runner = org_env
    _metric(runner, org, tmp_path, "Tier", "STRING")
    _metric(runner, org, tmp_path, "Renewal", "DATE")
    source = tmp_path / "values.csv"
    _write_csv(
        source,
        [
            ["s0", "tier", "a,b", "2024-01-01T00:00:00Z", "src,0"],
            ["s0", "tier", "c", "2023-01-01T00:00:00Z", "old"],
            ["s0", "renewal", "2025-02-03", "2024-01-01T00:00:00Z", "crm"],
        ],
    )
    assert runner.invoke(cli, ["import", str(source), "--org", org]).exit_code == 0
    _archive(org, "renewal")
    before = _history(runner, org, tmp_path)

    exported = tmp_path / f"current.{suffix}"
    result = runner.invoke(cli, ["export", "--org", org, "-o", str(exported)])
    assert result.exit_code == 0, result.output
    current = _export(runner, org, tmp_path)
    assert sorted((r["metric"], r["value"], r["source"]) for r in current) == [
        ("renewal", "2025-02-03", "crm"),
        ("tier", "a,b", "src,0"),
    ]
    again = runner.invoke(cli, ["import", str(exported), "--org", org])
    assert again.exit_code == 0, again.output
    # The archived metric takes no writes (409 metric_archived); its value is there already.
    assert "1 stored, 1 rejected" in _flat(again.stderr)
    (refused,) = (tmp_path / f"current.{suffix}.rejected.ndjson").read_text().splitlines()
    assert json.loads(refused)["errors"][0]["type"] == "metric_archived"
    assert _history(runner, org, tmp_path) == before


def _archive(org, key):
    import asyncio

    from customer_metrics.settings import get_settings
    from customer_metrics.transfer.connection import api_client

    async def archive():
        async with api_client(None, None, int(org), get_settings()) as client:
            response = await client.patch(f"/customers/metrics/{key}", json={"archived": True})
            assert response.status_code == 200, response.text

    asyncio.run(archive())


def test_csv_cells_are_typed_whatever_form_names_the_metric(org_env, tmp_path):
    org, runner = org_env
    _metric(runner, org, tmp_path, "Seats", "INTEGER")
    _metric(runner, org, tmp_path, "Active", "BOOLEAN")
    _metric(runner, org, tmp_path, "ARR", "NUMBER")
    source = tmp_path / "values.csv"
    refs = ["seats", "METRIC-001", "METRIC-1", "001", "1"]
    rows = [[f"c{i}", ref, str(i), "", ""] for i, ref in enumerate(refs)]
    rows += [["c0", "METRIC-2", " TRUE ", "", ""], ["c0", "003", " 1.50 ", "", ""]]
    _write_csv(source, rows)
    result = runner.invoke(cli, ["import", str(source), "--org", org])
    assert result.exit_code == 0, result.output
    assert "7 stored, 0 rejected" in _flat(result.stderr)
    current = {(r["customer_id"], r["metric"]): r["value"] for r in _export(runner, org, tmp_path)}
    assert current[("c4", "seats")] == 4
    assert current[("c0", "active")] is True
    assert current[("c0", "arr")] == 1.5


def test_a_byte_order_mark_is_skipped_and_a_row_that_is_not_utf8_is_rejected_alone(
    org_env, tmp_path
):
    org, runner = org_env
    _metric(runner, org, tmp_path, "Seats", "INTEGER")
    source = tmp_path / "values.csv"
    lines = [b"customer_id,metric,value"] + [f"c{i},seats,{i}".encode() for i in range(5)]
    lines.insert(3, b"caf\xe9,seats,1")  # line 4: Latin-1, not UTF-8
    source.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    result = runner.invoke(cli, ["import", str(source), "--org", org])
    assert result.exit_code == 0, result.output
    assert "5 stored, 1 rejected" in _flat(result.stderr)
    (rejected,) = [
        json.loads(line)
        for line in (tmp_path / "values.csv.rejected.ndjson").read_text().splitlines()
    ]
    assert rejected["line"] == 4
    assert rejected["errors"][0]["msg"] == "row is not UTF-8 text"
    assert "caf\ufffd" in rejected["row"]


def test_ndjson_lines_are_parsed_as_strictly_as_the_api_parses_bodies(org_env, tmp_path):
    org, runner = org_env
    _metric(runner, org, tmp_path, "ARR", "NUMBER")
    source = tmp_path / "values.ndjson"
    source.write_text(
        '{"customer_id": "a", "metric": "arr", "value": 1, "value": 2}\n'
        '{"customer_id": "b", "metric": "arr", "value": NaN}\n'
        '{"customer_id": "c", "metric": "arr", "value": 3}\n'
    )
    result = runner.invoke(cli, ["import", str(source), "--org", org])
    assert result.exit_code == 0, result.output
    assert "1 stored, 2 rejected" in _flat(result.stderr)
    reasons = (tmp_path / "values.ndjson.rejected.ndjson").read_text()
    assert "duplicate key 'value'" in reasons
    assert [r["customer_id"] for r in _export(runner, org, tmp_path)] == ["c"]


def test_format_is_checked_and_case_blind(org_env, tmp_path):
    org, runner = org_env
    _metric(runner, org, tmp_path, "Seats", "INTEGER")
    source = tmp_path / "values.txt"
    source.write_text('{"customer_id": "a", "metric": "seats", "value": 1}\n')
    wrong = runner.invoke(cli, ["export", "--org", org, "--format", "xml"])
    assert wrong.exit_code == 2
    assert "--format must be csv or ndjson" in _flat(wrong.stderr)
    result = runner.invoke(cli, ["import", str(source), "--org", org, "--format", "NDJSON"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out.txt"
    result = runner.invoke(cli, ["export", "--org", org, "--format", "CSV", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0] == "customer_id,metric,value,observed_at,source"


def test_chunks_a_server_refuses_as_too_large_are_sent_in_halves(org_env, tmp_path, monkeypatch):
    """Halves down to single rows: a row no body can carry is rejected, the rest stored, and
    a re-run replays every chunk (the halves' keys come out the same)."""
    org, runner = org_env
    _metric(runner, org, tmp_path, "Notes", "STRING")
    _metric(runner, org, tmp_path, "Seats", "INTEGER")
    monkeypatch.setenv("CM_MAX_BODY_BYTES", str(16 * 1024))  # each row takes ~1 KiB
    source = tmp_path / "values.csv"
    rows = [[f"c{i:03d}", "notes", "x" * 1000, "", "src"] for i in range(100)]
    rows[40] = ["c040", "seats", "many", "", ""]  # line 42: rejected by the server
    rows[70] = ["c070", "notes", "y" * 1000 + "é" * 10_000, "", ""]  # line 72: too large
    _write_csv(source, rows)
    result = runner.invoke(cli, ["import", str(source), "--org", org])
    assert result.exit_code == 0, result.output
    assert "98 stored, 2 rejected" in _flat(result.stderr)
    lines = (tmp_path / "values.csv.rejected.ndjson").read_text().splitlines()
    rejected = {r["line"]: r["errors"][0]["type"] for r in map(json.loads, lines)}
    assert rejected == {42: "int_type", 72: "payload_too_large"}
    again = runner.invoke(cli, ["import", str(source), "--org", org])
    assert again.exit_code == 0, again.output
    assert "98 stored, 2 rejected" in _flat(again.stderr)  # the replayed answers
    assert "chunk(s) already imported before" in _flat(again.stderr)
    assert len(_export(runner, org, tmp_path, "--history")) == 98


def test_a_chunk_stays_under_the_byte_cap_whatever_its_row_count(org_env, tmp_path, monkeypatch):
    from customer_metrics.transfer import importer

    org, runner = org_env
    _metric(runner, org, tmp_path, "Notes", "STRING")
    monkeypatch.setattr(importer, "MAX_CHUNK_BYTES", 10 * 1024)
    monkeypatch.setenv("CM_MAX_BODY_BYTES", str(12 * 1024))  # a larger chunk would be a 413
    source = tmp_path / "values.csv"
    _write_csv(source, [[f"c{i:03d}", "notes", "x" * 1000, "", ""] for i in range(30)])
    result = runner.invoke(cli, ["import", str(source), "--org", org])
    assert result.exit_code == 0, result.output
    assert "30 stored, 0 rejected" in _flat(result.stderr)
    again = runner.invoke(cli, ["import", str(source), "--org", org])
    assert "4 chunk(s) already imported before" in _flat(again.stderr)  # 9 + 9 + 9 + 3 rows


def test_an_import_that_stops_says_how_far_it_got(org_env, tmp_path):
    org, runner = org_env
    _metric(runner, org, tmp_path, "Seats", "INTEGER")
    source = tmp_path / "values.csv"
    _write_csv(source, [*([f"c{i}", "seats", str(i), "", ""] for i in range(4)), ["c9", "seats"]])
    nowhere = tmp_path / "missing" / "rejects.ndjson"
    command = ["import", str(source), "--org", org, "--chunk-size", "2", "--rejects", str(nowhere)]
    result = runner.invoke(cli, command)
    assert result.exit_code == 1
    said = _flat(result.stderr)
    assert "Stopped after reading 5 rows: 4 stored, 0 rejected." in said
    assert "No such file or directory" in said
    assert "Traceback" not in result.output


def test_a_rerun_leaves_no_earlier_runs_rejects_behind(org_env, tmp_path):
    org, runner = org_env
    _metric(runner, org, tmp_path, "Seats", "INTEGER")
    source = tmp_path / "values.csv"
    rejects = tmp_path / "values.csv.rejected.ndjson"
    _write_csv(source, [["a", "seats", "1", "", ""], ["b", "seats", "many", "", ""]])
    assert runner.invoke(cli, ["import", str(source), "--org", org]).exit_code == 0
    assert rejects.exists()
    _write_csv(source, [["a", "seats", "1", "", ""], ["b", "seats", "2", "", ""]])
    fixed = runner.invoke(cli, ["import", str(source), "--org", org])
    assert "2 stored, 0 rejected" in _flat(fixed.stderr)
    assert not rejects.exists()


def test_what_stops_an_export_or_import_is_said_without_a_traceback(org_env, tmp_path):
    org, runner = org_env
    dead = runner.invoke(cli, ["export", "--url", "http://127.0.0.1:9", "--api-key", "cm_x"])
    assert dead.exit_code == 1
    assert "cannot reach the server" in _flat(dead.stderr)
    nowhere = runner.invoke(
        cli, ["export", "--org", org, "-o", str(tmp_path / "missing" / "out.csv")]
    )
    assert nowhere.exit_code == 1
    assert "No such file or directory" in _flat(nowhere.stderr)
    for result in (dead, nowhere):
        assert "Traceback" not in result.output
