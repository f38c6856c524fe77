"""Gapless per-organization numbers: bumped inside the caller's transaction, so a rollback
returns the number and concurrent callers queue on the counter row."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, Select, Table, bindparam, insert, literal_column, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from customer_metrics.storage.dialect import upsert_insert
from customer_metrics.storage.models import Counter, table_of
from customer_metrics.storage.native import ASYNC_COMMIT


async def next_value(conn: AsyncConnection, organization_id: int, name: str, count: int = 1) -> int:
    """Takes `count` numbers and returns the last one (the first is last - count + 1)."""
    table = table_of(Counter)
    insert = upsert_insert(conn.dialect.name)
    stmt = (
        insert(table)
        .values(organization_id=organization_id, name=name, value=count)
        .on_conflict_do_update(
            index_elements=[table.c.organization_id, table.c.name],
            set_={"value": table.c.value + count},
        )
        .returning(table.c.value)
    )
    return int((await conn.execute(stmt)).scalar_one())


async def insert_numbered(
    conn: AsyncConnection,
    table: Table,
    organization_id: int,
    counter: str,
    values: dict[str, Any],
    returning: list[Any],
    relaxed: bool = False,
    only_if: Any = None,
    only_if_params: dict[str, Any] | None = None,
) -> Any:
    """Inserts one row whose `id` is the organization's next `counter` number.

    The counter row is locked from the bump until commit, so callers queue there: on
    PostgreSQL the bump and the insert are one statement, issued last, so the lock is held
    for that statement and the commit only. A failed insert (a unique violation) rolls the
    bump back with it: numbers have no gaps.

    `relaxed` (a statement that commits alone, on PostgreSQL): the commit does not wait for
    the disk, so the counter lock is not held through a WAL flush, which a checkpoint can
    stretch to many milliseconds while every create of the organization queues behind it.
    The caller must wait for durability before answering (`Session.own_transactions` does:
    WAL is flushed in order, so once a later commit is on disk, this one is too).

    `only_if` (PostgreSQL; a condition built once, with its own parameters in
    `only_if_params`): neither the number is taken nor the row inserted unless it holds;
    None is returned then."""
    params = {"organization_id": organization_id, **values}
    if conn.dialect.name == "sqlite":  # writes are already serialised by BEGIN IMMEDIATE
        assert only_if is None, "conditional numbered inserts are PostgreSQL's"
        params["id"] = await next_value(conn, organization_id, counter)
    params.update(only_if_params or {})
    stmt = _numbered_insert(
        conn.dialect.name, table, counter, tuple(values), tuple(returning), relaxed, only_if
    )
    return (await conn.execute(stmt, params)).first()


_NAME = re.compile(r"[a-z_]+")


@lru_cache(maxsize=64)
def _numbered_insert(
    dialect_name: str,
    table: Table,
    counter: str,
    names: tuple[str, ...],
    returning: tuple[Any, ...],
    relaxed: bool,
    only_if: Any,
) -> Any:
    """Built once per shape, run with bound parameters: building SQLAlchemy statements costs
    more CPU per request than executing them. The service's own constants (the counter's
    name, the increment, the setting) are written into the SQL: each parameter is encoded
    on every request."""
    columns = {name: bindparam(name, type_=table.c[name].type) for name in names}
    org = bindparam("organization_id", type_=table.c.organization_id.type)
    if dialect_name == "sqlite":
        stmt = insert(table).values(organization_id=org, id=bindparam("id"), **columns)
        return stmt.returning(*returning)
    counters = table_of(Counter)
    assert _NAME.fullmatch(counter), counter  # a name of the code's, never a client's
    one = literal_column("1", BigInteger)
    first = select(org, literal_column(f"'{counter}'", counters.c.name.type), one)
    bump = (
        pg_insert(counters)
        .from_select(
            ["organization_id", "name", "value"],
            first if only_if is None else first.where(only_if),
        )
        .on_conflict_do_update(
            index_elements=[counters.c.organization_id, counters.c.name],
            set_={"value": counters.c.value + one},
        )
        .returning(counters.c.value)
        .cte("number")
    )
    source = select(org, bump.c.value, *columns.values())
    if relaxed:
        # Transaction-local: the setting ends with this statement's own transaction.
        no_wait: Select[Any] = select(
            literal_column("set_config('synchronous_commit', 'off', true)").label("s")
        )
        source = source.select_from(bump, no_wait.cte("relaxed"))
        return (
            insert(table)
            .from_select(["organization_id", "id", *names], source)
            .returning(*returning)
            .execution_options(**{ASYNC_COMMIT: True})
        )
    stmt = insert(table).from_select(["organization_id", "id", *names], source)
    return stmt.returning(*returning)


@asynccontextmanager
async def attempt(conn: AsyncConnection) -> AsyncIterator[None]:
    """Statements that may fail and be tried again in the same transaction: rolled back to a
    savepoint on failure (PostgreSQL would abort the whole transaction; SQLite would keep the
    half that succeeded, such as a counter bump)."""
    await conn.exec_driver_sql("SAVEPOINT cm_attempt")
    try:
        yield
    except IntegrityError:
        await conn.exec_driver_sql("ROLLBACK TO SAVEPOINT cm_attempt")
        raise
