"""Customers table access; every statement is scoped to the tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, Text, bindparam, delete, func, or_, select, update

from customer_metrics.storage import counters
from customer_metrics.storage.database import Session
from customer_metrics.storage.dialect import in_list, in_list_param, like_escape, upsert_insert
from customer_metrics.storage.models import CurrentValue, Customer, Observation, table_of
from customer_metrics.tenancy import Tenant
from customer_metrics.values.repository import mark_changed

_t = table_of(Customer)
_observations = table_of(Observation)
# Every value write resolves its customer: built once, run with bound parameters.
_REF_OF = select(_t.c.id).where(
    _t.c.organization_id == bindparam("org"), _t.c.customer_id == bindparam("customer_id")
)
_current = table_of(CurrentValue)


@lru_cache(maxsize=2)
def _count_refs(dialect_name: str) -> Any:
    present = in_list(_t.c.id, "refs", BigInteger(), dialect_name)
    return select(func.count()).where(_t.c.organization_id == bindparam("org"), present)


@lru_cache(maxsize=2)
def _refs_of(dialect_name: str) -> Any:
    """The refs of many customer ids (a batch names up to 10,000), one list parameter."""
    wanted = in_list(_t.c.customer_id, "ids", Text(), dialect_name)
    return select(_t.c.customer_id, _t.c.id).where(_t.c.organization_id == bindparam("org"), wanted)


@dataclass(frozen=True, slots=True)
class CustomerRow:
    organization_id: int
    id: int
    customer_id: str
    name: str | None
    email: str | None
    time_created: datetime
    time_updated: datetime


def _row(r: Any) -> CustomerRow:
    return CustomerRow(**{c.name: getattr(r, c.name) for c in _t.c})


class CustomerRepository:
    def __init__(self, session: Session, tenant: Tenant) -> None:
        self._conn = session.connection
        self._org = tenant.organization_id

    async def next_number(self) -> int:
        return await counters.next_value(self._conn, self._org, "customer")

    async def get(self, customer_id: str) -> CustomerRow | None:
        stmt = select(_t).where(_t.c.organization_id == self._org, _t.c.customer_id == customer_id)
        row = (await self._conn.execute(stmt)).first()
        return _row(row) if row else None

    async def ref_of(self, customer_id: str) -> int | None:
        params = {"org": self._org, "customer_id": customer_id}
        return (await self._conn.execute(_REF_OF, params)).scalar()

    async def refs_of(self, customer_ids: list[str]) -> dict[str, int]:
        """{customer_id: ref} for those of `customer_ids` that exist, in one statement."""
        if not customer_ids:
            return {}
        dialect_name = self._conn.dialect.name
        params = {"org": self._org, "ids": in_list_param(customer_ids, dialect_name)}
        rows = await self._conn.execute(_refs_of(dialect_name), params)
        return {customer_id: ref for customer_id, ref in rows}

    async def all_exist(self, refs: list[int]) -> bool:
        """Whether every customer of `refs` (distinct) is still there (none was erased)."""
        if not refs:
            return True
        dialect_name = self._conn.dialect.name
        params = {"org": self._org, "refs": in_list_param(refs, dialect_name)}
        count = (await self._conn.execute(_count_refs(dialect_name), params)).scalar_one()
        return int(count) == len(refs)

    async def insert_many_if_absent(self, customer_ids: list[str], now: datetime) -> None:
        """Creates every customer not there yet, numbered from one counter bump."""
        if not customer_ids:
            return
        last = await counters.next_value(self._conn, self._org, "customer", len(customer_ids))
        first = last - len(customer_ids) + 1
        insert = upsert_insert(self._conn.dialect.name)
        rows = [
            {
                "organization_id": self._org,
                "id": first + offset,
                "customer_id": customer_id,
                "time_created": now,
                "time_updated": now,
            }
            for offset, customer_id in enumerate(customer_ids)
        ]
        stmt = insert(_t).on_conflict_do_nothing(
            index_elements=[_t.c.organization_id, _t.c.customer_id]
        )
        await self._conn.execute(stmt, rows)

    async def insert_if_absent(self, values: dict[str, Any]) -> CustomerRow | None:
        """Inserts, or returns None when the customer_id is taken (no error, no abort)."""
        insert = upsert_insert(self._conn.dialect.name)
        stmt = (
            insert(_t)
            .values(organization_id=self._org, **values)
            .on_conflict_do_nothing(index_elements=[_t.c.organization_id, _t.c.customer_id])
            .returning(*_t.c)
        )
        row = (await self._conn.execute(stmt)).first()
        return _row(row) if row else None

    async def update(self, id: int, values: dict[str, Any]) -> CustomerRow:
        stmt = (
            update(_t)
            .where(_t.c.organization_id == self._org, _t.c.id == id)
            .values(**values)
            .returning(*_t.c)
        )
        return _row((await self._conn.execute(stmt)).one())

    async def delete_with_values(self, id: int) -> None:
        # The series rollup takes the erased observations out at its next fold.
        pairs = (_observations.c.organization_id, _observations.c.metric_ref)
        earliest = (
            select(*pairs, _observations.c.customer_ref, func.min(_observations.c.observed_at))
            .where(_observations.c.organization_id == self._org, _observations.c.customer_ref == id)
            .group_by(*pairs, _observations.c.customer_ref)
            # In key order, as every writer marks: a fold removing marks cannot deadlock
            # with it.
            .order_by(_observations.c.metric_ref)
        )
        await self._conn.execute(mark_changed(earliest, self._conn.dialect.name))
        for table in (_current, _observations):
            await self._conn.execute(
                delete(table).where(
                    table.c.organization_id == self._org, table.c.customer_ref == id
                )
            )
        await self._conn.execute(delete(_t).where(_t.c.organization_id == self._org, _t.c.id == id))

    async def list_page(self, query: str | None, after_id: int, limit: int) -> list[CustomerRow]:
        stmt = (
            select(_t)
            .where(_t.c.organization_id == self._org, _t.c.id > after_id)
            .order_by(_t.c.id)
            .limit(limit)
        )
        if query:
            pattern = f"%{like_escape(query.lower())}%"
            stmt = stmt.where(
                or_(
                    *(
                        func.lower(column).like(pattern, escape="\\")
                        for column in (_t.c.customer_id, _t.c.name, _t.c.email)
                    )
                )
            )
        return [_row(r) for r in await self._conn.execute(stmt)]
