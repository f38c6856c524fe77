"""`customer-metrics migrate --database-url OWNER --app-role NAME`: the role the service
connects as on PostgreSQL is created, granted what the service needs, and held by row-level
security; a role that would bypass it is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from customer_metrics.cli import _is_migrated
from customer_metrics.cli import app as cli
from customer_metrics.main import create_app
from customer_metrics.settings import Settings
from customer_metrics.storage import migrate, roles
from tests.builders import create_metric
from tests.conftest import (
    Backend,
    api_client,
    create_postgres_database,
    drop_app_role,
    drop_postgres_database,
)

PASSWORD = "s3cret'; --%"  # quoted by the server, URL-encoded, escaped for Alembic's config


@pytest.fixture
def owner_url(backend: Backend) -> Iterator[str]:
    """A fresh, unmigrated database, once per run (as the owning superuser)."""
    if backend.name != "postgres" or backend.owner_url:
        pytest.skip("once, on PostgreSQL")
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


def _cli(*args: str, env: dict[str, str]) -> Any:
    return CliRunner().invoke(cli, list(args), env=env)


def test_a_role_that_bypasses_row_security_is_refused(owner_url):
    migrate.upgrade(owner_url)
    with pytest.raises(roles.RoleError, match="bypasses row-level security"):
        asyncio.run(roles.grant_app_role(owner_url, "postgres"))
    owner = f"{make_url(owner_url).database}_owner"

    async def hand_a_table_to(role: str) -> None:
        conn = await asyncpg.connect(owner_url)
        try:
            await conn.execute(f'CREATE ROLE "{role}"; ALTER TABLE metrics OWNER TO "{role}"')
        finally:
            await conn.close()

    asyncio.run(hand_a_table_to(owner))
    try:
        with pytest.raises(roles.RoleError, match="owns the tables"):
            asyncio.run(roles.grant_app_role(owner_url, owner))
    finally:
        drop_postgres_database(owner_url)
        drop_app_role(make_url(owner_url).set(username=owner).render_as_string())


def test_migrate_sets_up_an_app_role_the_service_runs_as(owner_url, tmp_path: Path):
    role = f"{make_url(owner_url).database}_app"
    app_url = make_url(owner_url).set(username=role, password=PASSWORD)
    app_url_text = app_url.render_as_string(hide_password=False)
    env = {
        "CM_MIGRATION_DATABASE_URL": "",
        "CM_DATABASE_URL": app_url_text,
        "CM_DATA_DIR": str(tmp_path),
        "CM_SECRET_KEY": "cli-secret",
        "CM_APP_ROLE_PASSWORD": PASSWORD,
    }
    settings = Settings(database_url=app_url_text, data_dir=tmp_path, secret_key="cli-secret")
    try:
        first = _cli("migrate", "--database-url", owner_url, "--app-role", role, env=env)
        assert first.exit_code == 0, first.output
        assert f"Created and granted role {role}" in first.output
        again = _cli("migrate", "--database-url", owner_url, "--app-role", role, env=env)
        assert again.exit_code == 0, again.output
        assert f"Granted role {role}" in again.output

        # As the app role (with its password): serve's start-up check, the admin plane, and
        # requests under row-level security.
        assert _is_migrated(settings)
        created = _cli("org", "create", "Acme", "--json", env=env)
        assert created.exit_code == 0, created.output
        assert asyncio.run(_serve_one_tenant(settings, json.loads(created.stdout)["api_key"]))

        # At the newest schema `migrate` as the app role has nothing to do; with a step to
        # run, the database refuses it, and the command says which URL to migrate with.
        assert _cli("migrate", env=env).exit_code == 0
        command.downgrade(migrate.alembic_config(owner_url), "0003_idempotency_keys")
        refused = _cli("migrate", env=env)
        assert refused.exit_code == 1
        assert "CM_MIGRATION_DATABASE_URL" in refused.output
    finally:
        drop_postgres_database(owner_url)
        drop_app_role(app_url_text)


async def _serve_one_tenant(settings: Settings, api_key: str) -> bool:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        async with api_client(application, api_key) as client:
            await create_metric(client, name="Seats")
            listed = await client.get("/customers/metrics")
            assert [m["key"] for m in listed.json()["data"]] == ["seats"]
        return bool(application.state.database.row_security)


def test_app_role_needs_postgresql(tmp_path: Path):
    env = {"CM_DATA_DIR": str(tmp_path), "CM_DATABASE_URL": "", "CM_MIGRATION_DATABASE_URL": ""}
    result = _cli("migrate", "--app-role", "cm_app", env=env)
    assert result.exit_code == 1
    assert "PostgreSQL" in result.output
