"""Gapless per-organization numbers: bumped inside the caller's transaction, so a rollback
returns the number and concurrent callers queue on the counter row."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from customer_metrics.storage.dialect import upsert_insert
from customer_metrics.storage.models import Counter, table_of


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
