"""Organizations table access. Unscoped by nature: this is the admin plane."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select

from customer_metrics.storage.database import Session
from customer_metrics.storage.models import Organization, table_of

_t = table_of(Organization)


@dataclass(frozen=True, slots=True)
class OrganizationRow:
    id: int
    name: str
    time_created: datetime


class OrganizationRepository:
    def __init__(self, session: Session) -> None:
        self._conn = session.connection

    async def create(self, name: str, now: datetime) -> OrganizationRow:
        stmt = insert(_t).values(name=name, time_created=now).returning(*_t.c)
        row = (await self._conn.execute(stmt)).one()
        return OrganizationRow(row.id, row.name, row.time_created)

    async def list_all_unscoped(self) -> list[OrganizationRow]:
        rows = await self._conn.execute(select(_t).order_by(_t.c.id))
        return [OrganizationRow(r.id, r.name, r.time_created) for r in rows]

    async def exists(self, organization_id: int) -> bool:
        stmt = select(_t.c.id).where(_t.c.id == organization_id)
        return (await self._conn.execute(stmt)).first() is not None

    async def count_unscoped(self) -> int:
        return int((await self._conn.execute(select(func.count()).select_from(_t))).scalar_one())
