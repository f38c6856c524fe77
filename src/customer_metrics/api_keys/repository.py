"""API keys table access. Lookup by hash is unscoped by design: it is how a request finds
its tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, insert, select, update

from customer_metrics.storage.database import Session
from customer_metrics.storage.models import ApiKey, table_of

_t = table_of(ApiKey)


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: int
    organization_id: int
    prefix: str
    time_created: datetime
    time_revoked: datetime | None


# Every request runs this one: built once (building a statement costs more than running it).
_ACTIVE_BY_HASH = select(_t.c.organization_id, _t.c.id).where(
    _t.c.key_hash == bindparam("key_hash"), _t.c.time_revoked.is_(None)
)


def key_still_active(organization_id: Any, key_hash: Any) -> Any:
    """True while the key with this hash is the organization's and not revoked: for
    statements that check a key remembered by the worker (KnownKeys) in the same round trip
    as their work. By hash, not by id: after a restore an id could name another key."""
    return exists().where(
        _t.c.key_hash == key_hash,
        _t.c.organization_id == organization_id,
        _t.c.time_revoked.is_(None),
    )


_COLUMNS = (_t.c.id, _t.c.organization_id, _t.c.prefix, _t.c.time_created, _t.c.time_revoked)


class ApiKeyRepository:
    def __init__(self, session: Session) -> None:
        self._conn = session.connection

    async def create(
        self, organization_id: int, prefix: str, key_hash: str, now: datetime
    ) -> ApiKeyRow:
        stmt = (
            insert(_t)
            .values(
                organization_id=organization_id, prefix=prefix, key_hash=key_hash, time_created=now
            )
            .returning(*_COLUMNS)
        )
        return ApiKeyRow(*(await self._conn.execute(stmt)).one())

    async def find_active_by_hash_unscoped(self, key_hash: str) -> tuple[int, int] | None:
        row = (await self._conn.execute(_ACTIVE_BY_HASH, {"key_hash": key_hash})).first()
        return (row[0], row[1]) if row else None

    async def list_unscoped(self, organization_id: int | None) -> list[ApiKeyRow]:
        stmt = select(*_COLUMNS).order_by(_t.c.id)
        if organization_id is not None:
            stmt = stmt.where(_t.c.organization_id == organization_id)
        return [ApiKeyRow(*r) for r in await self._conn.execute(stmt)]

    async def revoke_by_prefix_unscoped(self, prefix: str, now: datetime) -> list[ApiKeyRow]:
        stmt = (
            update(_t)
            .where(_t.c.prefix == prefix, _t.c.time_revoked.is_(None))
            .values(time_revoked=now)
            .returning(*_COLUMNS)
        )
        return [ApiKeyRow(*r) for r in await self._conn.execute(stmt)]
