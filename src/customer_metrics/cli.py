"""The one command-line entry point: `customer-metrics serve | migrate | org … | key …`."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from customer_metrics import serving
from customer_metrics.api_keys.repository import ApiKeyRepository
from customer_metrics.api_keys.secrets import load_or_create_secret
from customer_metrics.api_keys.service import ApiKeyService
from customer_metrics.clock import format_timestamp
from customer_metrics.errors import AppError
from customer_metrics.organizations.repository import OrganizationRepository
from customer_metrics.organizations.service import OrganizationService
from customer_metrics.settings import Settings, get_settings
from customer_metrics.storage import migrate as migrations
from customer_metrics.storage import roles
from customer_metrics.storage.database import Database, Session, open_session
from customer_metrics.transfer import commands as transfer_commands

T = TypeVar("T")

app = typer.Typer(
    help="Customer metrics: the service and its administration.", no_args_is_help=True
)
org_app = typer.Typer(help="Organizations (tenants).", no_args_is_help=True)
key_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(org_app, name="org")
app.add_typer(key_app, name="key")
app.command("import")(transfer_commands.import_command)
app.command("export")(transfer_commands.export_command)

out = Console()
err = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _in_transaction(settings: Settings, work: Callable[[Session], Awaitable[T]]) -> T:
    async def run() -> T:
        database = Database(settings.resolved_database_url, pool_size=1)
        try:
            if not await migrations.is_up_to_date(database, settings.resolved_database_url):
                raise typer.Exit(_not_migrated())
            session = await open_session(database, read_only=False)
            try:
                result = await work(session)
                await session.commit()
                return result
            finally:
                await session.close()
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except AppError as error:
        err.print(f"[red]error:[/red] {escape(error.detail)}")
        raise typer.Exit(1) from None


def _not_migrated() -> int:
    err.print(
        "[red]The database is not migrated to this version.[/red] "
        "Run `customer-metrics migrate` first."
    )
    return 1


def _keys(settings: Settings, session: Session) -> ApiKeyService:
    secret = load_or_create_secret(settings.secret_key, settings.data_dir)
    return ApiKeyService(ApiKeyRepository(session), secret)


@app.command()
def migrate(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Connect as the tables' owner (default: CM_MIGRATION_DATABASE_URL, "
            "else CM_DATABASE_URL).",
        ),
    ] = None,
    app_role: Annotated[
        str | None,
        typer.Option(
            "--app-role",
            help="PostgreSQL: create (when missing) and grant the role the service connects "
            "as; row-level security holds it to one organization per transaction.",
        ),
    ] = None,
    app_password: Annotated[
        str | None,
        typer.Option(
            "--app-password",
            envvar="CM_APP_ROLE_PASSWORD",
            help="Set the app role's password (from the environment, it stays out of the "
            "process list).",
        ),
    ] = None,
) -> None:
    """Create or upgrade the database schema (safe to run again), as the tables' owner; with
    --app-role, also set up the role the service connects as."""
    settings = get_settings()
    url = database_url or settings.resolved_migration_url
    if app_role is not None and not roles.has_roles(url):
        err.print("[red]error:[/red] --app-role is for PostgreSQL; SQLite has no roles.")
        raise typer.Exit(1)
    try:
        migrations.upgrade(url)
    except migrations.MigrationRefused as error:
        err.print(
            f"[red]error:[/red] {error}. Migrate as the tables' owner: --database-url or "
            "CM_MIGRATION_DATABASE_URL."
        )
        raise typer.Exit(1) from None
    out.print("Database is at the newest schema.")
    if app_role is not None:
        _grant_app_role(url, app_role, app_password)


def _grant_app_role(url: str, role: str, password: str | None) -> None:
    try:
        created = asyncio.run(roles.grant_app_role(url, role, password))
    except roles.RoleError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    done = "Created and granted" if created else "Granted"
    out.print(f"{done} role {role}: connect the service as it (CM_DATABASE_URL).")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Serve the API. The embedded SQLite database is migrated (and, when empty, given one
    organization and key) on start; a PostgreSQL database must be migrated first."""
    settings = get_settings()
    if not settings.database_url:
        migrations.upgrade(settings.resolved_database_url)
        _bootstrap_embedded(settings)
    elif not _is_migrated(settings):
        raise typer.Exit(_not_migrated())
    worker_count = workers or settings.workers
    # Each worker reads its settings anew: it must know how many share the rate limits.
    os.environ["CM_WORKERS"] = str(worker_count)
    if worker_count > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers write their counters here so /metrics adds up every worker, not just one.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cm-prometheus-")
    serving.run(settings, host or settings.host, port or settings.port, worker_count)


def _is_migrated(settings: Settings) -> bool:
    async def check() -> bool:
        database = Database(settings.resolved_database_url, pool_size=1)
        try:
            return await migrations.is_up_to_date(database, settings.resolved_database_url)
        finally:
            await database.dispose()

    return asyncio.run(check())


def _bootstrap_embedded(settings: Settings) -> None:
    async def work(session: Session) -> str | None:
        organizations = OrganizationService(OrganizationRepository(session))
        if not await organizations.is_empty():
            return None
        org = await organizations.create("Default organization")
        return (await _keys(settings, session).issue(org.id)).api_key

    key = _in_transaction(settings, work)
    if key:
        out.print("Created the first organization. Its API key (shown only this once):")
        out.print(key, markup=False, highlight=False)


@org_app.command("create")
def org_create(name: str, as_json: JsonFlag = False) -> None:
    """Create an organization and its first API key."""
    settings = get_settings()

    async def work(session: Session) -> tuple[int, str, str]:
        org = await OrganizationService(OrganizationRepository(session)).create(name)
        issued = await _keys(settings, session).issue(org.id)
        return org.id, org.name, issued.api_key

    org_id, org_name, api_key = _in_transaction(settings, work)
    if as_json:
        print(json.dumps({"organization_id": org_id, "name": org_name, "api_key": api_key}))
        return
    out.print(f"Organization {org_id} ({org_name}) created. API key (shown only this once):")
    out.print(api_key, markup=False, highlight=False)


@org_app.command("list")
def org_list(as_json: JsonFlag = False) -> None:
    """List organizations."""
    settings = get_settings()

    async def work(session: Session) -> list[tuple[int, str, str]]:
        rows = await OrganizationService(OrganizationRepository(session)).list_all()
        return [(r.id, r.name, format_timestamp(r.time_created)) for r in rows]

    rows = _in_transaction(settings, work)
    if as_json:
        keys = ("organization_id", "name", "time_created")
        print(json.dumps([dict(zip(keys, row, strict=True)) for row in rows]))
        return
    table = Table("organization_id", "name", "time_created")
    for org_id, name, created in rows:
        table.add_row(str(org_id), name, created)
    out.print(table)


@key_app.command("create")
def key_create(
    org: Annotated[int, typer.Option("--org", help="Organization id.")], as_json: JsonFlag = False
) -> None:
    """Issue a new API key for an organization."""
    settings = get_settings()

    async def work(session: Session) -> tuple[str, str]:
        await OrganizationService(OrganizationRepository(session)).require(org)
        issued = await _keys(settings, session).issue(org)
        return issued.api_key, issued.row.prefix

    api_key, prefix = _in_transaction(settings, work)
    if as_json:
        print(json.dumps({"organization_id": org, "api_key": api_key, "prefix": prefix}))
        return
    out.print(f"API key for organization {org} (shown only this once):")
    out.print(api_key, markup=False, highlight=False)


@key_app.command("list")
def key_list(
    org: Annotated[int | None, typer.Option("--org", help="Only this organization.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List API keys by prefix (the keys themselves are never stored)."""
    settings = get_settings()

    async def work(session: Session) -> list[dict[str, object]]:
        rows = await _keys(settings, session).list_keys(org)
        return [
            {
                "prefix": r.prefix,
                "organization_id": r.organization_id,
                "time_created": format_timestamp(r.time_created),
                "revoked": r.time_revoked is not None,
            }
            for r in rows
        ]

    rows = _in_transaction(settings, work)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("prefix", "organization_id", "time_created", "revoked")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)


@key_app.command("revoke")
def key_revoke(prefix: str, as_json: JsonFlag = False) -> None:
    """Revoke the API key with this prefix (`cm_xxxxxxxx`); it fails on its next request."""
    settings = get_settings()

    async def work(session: Session) -> int:
        return len(await _keys(settings, session).revoke(prefix))

    count = _in_transaction(settings, work)
    if as_json:
        print(json.dumps({"prefix": prefix, "revoked": count}))
        return
    out.print(f"Revoked {count} key(s) with prefix {prefix}.")
