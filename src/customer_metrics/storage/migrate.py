"""Running and checking migrations, for the CLI, the server's start-up and the tests."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from customer_metrics.storage.database import Database


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("customer_metrics.storage") / "migrations"))
    # Alembic's config interpolates `%`: a URL-encoded password (`%27`) must be escaped.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


class MigrationRefused(Exception):
    """The database refused the migration for want of privileges."""


def upgrade(url: str) -> None:
    """Bring the database to the newest schema. Safe to run again: it is a no-op then."""
    try:
        command.upgrade(alembic_config(url), "head")
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != _INSUFFICIENT_PRIVILEGE:
            raise
        raise MigrationRefused(str(error.orig).strip()) from error


_INSUFFICIENT_PRIVILEGE = "42501"


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def is_up_to_date(database: Database, url: str) -> bool:
    async with database.engine.connect() as conn:
        current = await conn.run_sync(_current_revision)
    return current == head_revision(url)
