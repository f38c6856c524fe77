"""Idempotency keys table access; scoped to the tenant except the expiry purge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, func, select, tuple_, update

from customer_metrics.storage.database import Session
from customer_metrics.storage.dialect import crosses_tenants_through_functions, upsert_insert
from customer_metrics.storage.models import IdempotencyKey, table_of
from customer_metrics.storage.types import UTCDateTime
from customer_metrics.tenancy import Tenant

_t = table_of(IdempotencyKey)
IN_PROGRESS = "in_progress"
COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class StoredKey:
    fingerprint: str
    status: str
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: bytes | None
    time_created: datetime
    time_expires: datetime


class IdempotencyRepository:
    def __init__(self, session: Session, tenant: Tenant) -> None:
        self._conn = session.connection
        self._org = tenant.organization_id

    async def insert_claim(
        self, key: str, fingerprint: str, now: datetime, expires: datetime
    ) -> bool:
        insert = upsert_insert(self._conn.dialect.name)
        stmt = (
            insert(_t)
            .values(
                organization_id=self._org,
                key=key,
                fingerprint=fingerprint,
                status=IN_PROGRESS,
                time_created=now,
                time_expires=expires,
            )
            .on_conflict_do_nothing(index_elements=[_t.c.organization_id, _t.c.key])
            .returning(_t.c.key)
        )
        return (await self._conn.execute(stmt)).first() is not None

    async def get(self, key: str) -> StoredKey | None:
        stmt = select(
            _t.c.fingerprint,
            _t.c.status,
            _t.c.response_status,
            _t.c.response_headers,
            _t.c.response_body,
            _t.c.time_created,
            _t.c.time_expires,
        ).where(_t.c.organization_id == self._org, _t.c.key == key)
        row = (await self._conn.execute(stmt)).first()
        return StoredKey(*row) if row else None

    async def take_over(
        self, key: str, seen: StoredKey, fingerprint: str, now: datetime, expires: datetime
    ) -> bool:
        """Re-claims an expired or abandoned key, unless someone else changed it meanwhile."""
        stmt = (
            update(_t)
            .where(
                _t.c.organization_id == self._org,
                _t.c.key == key,
                _t.c.time_created == seen.time_created,
                _t.c.status == seen.status,
            )
            .values(
                fingerprint=fingerprint,
                status=IN_PROGRESS,
                response_status=None,
                response_headers=None,
                response_body=None,
                time_created=now,
                time_expires=expires,
            )
        )
        return (await self._conn.execute(stmt)).rowcount == 1

    async def complete(
        self, key: str, status: int, headers: dict[str, str], body: bytes, expires: datetime
    ) -> None:
        await self._conn.execute(
            update(_t)
            .where(_t.c.organization_id == self._org, _t.c.key == key)
            .values(
                status=COMPLETED,
                response_status=status,
                response_headers=headers,
                response_body=body,
                time_expires=expires,
            )
        )

    async def release(self, key: str) -> None:
        await self._conn.execute(
            delete(_t).where(
                _t.c.organization_id == self._org, _t.c.key == key, _t.c.status == IN_PROGRESS
            )
        )


async def purge_expired_unscoped(session: Session, now: datetime, batch: int) -> int:
    """Deletes up to `batch` expired keys of any organization; short, so it never holds locks
    for long."""
    conn = session.connection
    if crosses_tenants_through_functions(conn.dialect.name):
        # The owner's function: it deletes expired keys only, whatever `now` says.
        purge = func.cm_purge_expired_idempotency_keys(
            bindparam("now", now, type_=UTCDateTime()), batch
        )
        return int((await conn.execute(select(purge))).scalar_one())
    expired = select(_t.c.organization_id, _t.c.key).where(_t.c.time_expires < now).limit(batch)
    stmt = delete(_t).where(tuple_(_t.c.organization_id, _t.c.key).in_(expired))
    return (await conn.execute(stmt)).rowcount
