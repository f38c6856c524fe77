"""The command line: JSON output exactly as the contract says, keys usable by the API."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from customer_metrics.cli import app as cli

KEY = re.compile(r"^cm_[A-Za-z0-9]{40}$")


@pytest.fixture
def run(backend, monkeypatch):
    monkeypatch.setenv("CM_DATA_DIR", str(backend.settings.data_dir))
    monkeypatch.setenv("CM_SECRET_KEY", backend.settings.secret_key)
    monkeypatch.setenv("CM_DATABASE_URL", backend.settings.database_url)
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result.stdout

    return invoke


def test_org_create_json_is_exactly_the_contract_object(run):
    created = json.loads(run("org", "create", "Acme Inc", "--json"))
    assert set(created) == {"organization_id", "name", "api_key"}
    assert isinstance(created["organization_id"], int)
    assert created["name"] == "Acme Inc"
    assert KEY.match(created["api_key"])
    listed = json.loads(run("org", "list", "--json"))
    assert {"organization_id": created["organization_id"], "name": "Acme Inc"}.items() <= next(
        o for o in listed if o["organization_id"] == created["organization_id"]
    ).items()


def test_key_create_list_and_revoke(run):
    org = json.loads(run("org", "create", "Keys Inc", "--json"))
    key = json.loads(run("key", "create", "--org", str(org["organization_id"]), "--json"))
    assert set(key) == {"organization_id", "api_key", "prefix"}
    assert key["organization_id"] == org["organization_id"]
    assert KEY.match(key["api_key"])
    assert key["api_key"].startswith(key["prefix"])
    assert len(key["prefix"]) == len("cm_") + 8

    listed = json.loads(run("key", "list", "--org", str(org["organization_id"]), "--json"))
    assert [k["prefix"] for k in listed] == [org["api_key"][:11], key["prefix"]]
    assert all(k["api_key"] not in json.dumps(listed) for k in (org, key))

    run("key", "revoke", key["prefix"])
    listed = json.loads(run("key", "list", "--org", str(org["organization_id"]), "--json"))
    assert [k["revoked"] for k in listed] == [False, True]


def test_key_create_for_unknown_org_fails_clearly(backend, monkeypatch):
    monkeypatch.setenv("CM_DATA_DIR", str(backend.settings.data_dir))
    monkeypatch.setenv("CM_DATABASE_URL", backend.settings.database_url)
    result = CliRunner().invoke(cli, ["key", "create", "--org", "999999", "--json"])
    assert result.exit_code == 1
    assert "No organization with id 999999" in result.output


def test_commands_refuse_an_unmigrated_database(tmp_path, monkeypatch):
    monkeypatch.setenv("CM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CM_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["org", "list"])
    assert result.exit_code == 1
    assert "customer-metrics migrate" in result.output


async def test_cli_key_works_against_the_api(backend, app, run):
    import asyncio

    from tests.conftest import api_client

    # The command line runs its own event loop: give it a thread, as a shell would a process.
    created = json.loads(await asyncio.to_thread(run, "org", "create", "Wired", "--json"))
    async with api_client(app, created["api_key"]) as client:
        response = await client.post(
            "/customers/metrics", json={"name": "X", "data_type": "NUMBER"}
        )
    assert response.status_code == 201
    assert response.json()["organization_id"] == created["organization_id"]


def test_serve_refuses_an_unmigrated_postgresql_database(monkeypatch):
    from tests.conftest import create_postgres_database, drop_postgres_database

    url = create_postgres_database()
    try:
        monkeypatch.setenv("CM_DATABASE_URL", url)
        monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("server started"))
        result = CliRunner().invoke(cli, ["serve"])
        assert result.exit_code == 1
        assert "customer-metrics migrate" in result.output
    finally:
        drop_postgres_database(url)


def test_serve_bootstraps_an_empty_embedded_database_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CM_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    started = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: started.append(k))
    first = CliRunner().invoke(cli, ["serve", "--port", "8123"])
    assert first.exit_code == 0, first.output
    keys = KEY_ANYWHERE.findall(first.stdout)
    assert len(keys) == 1
    assert started[0]["port"] == 8123
    second = CliRunner().invoke(cli, ["serve"])
    assert second.exit_code == 0
    assert KEY_ANYWHERE.findall(second.stdout) == []
    orgs = json.loads(CliRunner().invoke(cli, ["org", "list", "--json"]).stdout)
    assert len(orgs) == 1
    listed = json.loads(CliRunner().invoke(cli, ["key", "list", "--json"]).stdout)
    assert [k["prefix"] for k in listed] == [keys[0][:11]]


KEY_ANYWHERE = re.compile(r"cm_[A-Za-z0-9]{40}")
