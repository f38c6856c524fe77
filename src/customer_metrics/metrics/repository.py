"""Metric definitions table access; every statement is scoped to the tenant."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, delete, exists, or_, select, update
from sqlalchemy.exc import IntegrityError

from customer_metrics.api_keys.repository import key_still_active
from customer_metrics.errors import Conflict, StaleLookup
from customer_metrics.storage import counters
from customer_metrics.storage.database import Session
from customer_metrics.storage.dialect import json_array_has, like_escape, violated_constraint
from customer_metrics.storage.models import Metric, table_of
from customer_metrics.tenancy import Tenant

_t = table_of(Metric)
_COLUMNS = [c for c in _t.c if c.name != "name_key"]
_NUMBER_ONLY = [_t.c.id]
# Every value write and read looks a metric up: built once, run with bound parameters.
_BY_ID = select(*_COLUMNS).where(
    _t.c.organization_id == bindparam("org"), _t.c.id == bindparam("ref")
)
_BY_KEY = select(*_COLUMNS).where(
    _t.c.organization_id == bindparam("org"), _t.c.key == bindparam("ref")
)


@dataclass(frozen=True, slots=True)
class MetricRow:
    organization_id: int
    id: int
    key: str
    name: str
    description: str | None
    data_type: str
    unit: str | None
    allowed_values: list[str] | None
    archived: bool
    time_created: datetime
    time_updated: datetime


@dataclass(frozen=True, slots=True)
class MetricFilter:
    include_archived: bool = False
    data_type: str | None = None
    folded_query: str | None = None


def _row(r: Any) -> MetricRow:
    return MetricRow(**{c.name: getattr(r, c.name) for c in _COLUMNS})


def definition_still_allows(organization_id: Any, metric: Any, value_text: Any) -> Any:
    """True while the metric a write was checked against, remembered by the worker
    (KnownMetrics), still stands as it was checked: same id, key and data type, not
    archived, and `value_text` (a STRING value; NULL otherwise) still among its
    allowed_values, if it has any. Parameters: `metric_ref`, `metric_key`,
    `metric_data_type` (PostgreSQL)."""
    return exists().where(
        _t.c.organization_id == organization_id,
        _t.c.id == metric,
        _t.c.key == bindparam("metric_key", type_=_t.c.key.type),
        _t.c.data_type == bindparam("metric_data_type", type_=_t.c.data_type.type),
        _t.c.archived.is_(False),
        or_(
            _t.c.allowed_values.is_(None),
            value_text.is_(None),
            json_array_has(_t.c.allowed_values, value_text),
        ),
    )


_KEY_STILL_ACTIVE = key_still_active(
    bindparam("organization_id", type_=_t.c.organization_id.type),
    bindparam("key_hash", type_=String()),
)


class MetricRepository:
    def __init__(self, session: Session, tenant: Tenant) -> None:
        self._session = session
        self._conn = session.connection
        self._org = tenant.organization_id
        self._tenant = tenant

    @property
    def organization_id(self) -> int:
        return self._org

    async def keys_starting_with(self, prefix: str) -> set[str]:
        stmt = select(_t.c.key).where(
            _t.c.organization_id == self._org,
            _t.c.key.like(like_escape(prefix) + "%", escape="\\"),
        )
        return set((await self._conn.execute(stmt)).scalars())

    async def insert_numbered(self, values: dict[str, Any], retry_on_key: bool) -> MetricRow | None:
        """Inserts with the next METRIC number. None when `retry_on_key` and the key was taken
        meanwhile (the caller derives another); other clashes are 409s."""
        try:
            async with self._session.own_transactions() as alone:
                # A statement that commits alone needs no savepoint to be tried again.
                guard = (
                    counters.attempt(self._conn) if retry_on_key and not alone else nullcontext()
                )
                async with guard:
                    row = await counters.insert_numbered(
                        self._conn,
                        _t,
                        self._org,
                        "metric",
                        values,
                        _NUMBER_ONLY,
                        relaxed=alone,
                        **self._key_check(),
                    )
        except IntegrityError as error:
            conflict = _conflict(error, values)
            if retry_on_key and conflict.code == "key_taken":
                return None
            raise conflict from None
        if row is None:  # the remembered key was revoked: nothing was numbered or stored
            raise StaleLookup()
        # The row holds exactly what was sent (the clock is already at the stored precision):
        # only its number comes back, which spares decoding eleven columns a create.
        return MetricRow(
            organization_id=self._org,
            id=row.id,
            key=values["key"],
            name=values["name"],
            description=values["description"],
            data_type=values["data_type"],
            unit=values["unit"],
            allowed_values=values["allowed_values"],
            archived=values["archived"],
            time_created=values["time_created"],
            time_updated=values["time_updated"],
        )

    def _key_check(self) -> dict[str, Any]:
        """With a key the worker remembers (KnownKeys), the insert checks it is still active."""
        if self._tenant.key_checked:
            return {}
        return {
            "only_if": _KEY_STILL_ACTIVE,
            "only_if_params": {"key_hash": self._tenant.key_hash},
        }

    async def get(self, *, id: int | None = None, key: str | None = None) -> MetricRow | None:
        stmt, value = (_BY_ID, id) if id is not None else (_BY_KEY, key)
        row = (await self._conn.execute(stmt, {"org": self._org, "ref": value})).first()
        return _row(row) if row else None

    async def get_many(self, ids: list[int], keys: list[str]) -> list[MetricRow]:
        conditions = []
        if ids:
            conditions.append(_t.c.id.in_(ids))
        if keys:
            conditions.append(_t.c.key.in_(keys))
        if not conditions:
            return []
        stmt = select(*_COLUMNS).where(_t.c.organization_id == self._org, or_(*conditions))
        return [_row(r) for r in await self._conn.execute(stmt)]

    async def list_page(self, where: MetricFilter, after_id: int, limit: int) -> list[MetricRow]:
        stmt = (
            select(*_COLUMNS)
            .where(_t.c.organization_id == self._org, _t.c.id > after_id)
            .order_by(_t.c.id)
            .limit(limit)
        )
        if not where.include_archived:
            stmt = stmt.where(_t.c.archived.is_(False))
        if where.data_type:
            stmt = stmt.where(_t.c.data_type == where.data_type)
        if where.folded_query:
            pattern = f"%{like_escape(where.folded_query)}%"
            stmt = stmt.where(
                or_(_t.c.name_key.like(pattern, escape="\\"), _t.c.key.like(pattern, escape="\\"))
            )
        return [_row(r) for r in await self._conn.execute(stmt)]

    async def update(self, id: int, values: dict[str, Any]) -> MetricRow:
        stmt = (
            update(_t)
            .where(_t.c.organization_id == self._org, _t.c.id == id)
            .values(**values)
            .returning(*_COLUMNS)
        )
        try:
            return _row((await self._conn.execute(stmt)).one())
        except IntegrityError as error:
            raise _conflict(error, values) from None

    async def delete(self, id: int) -> None:
        await self._conn.execute(delete(_t).where(_t.c.organization_id == self._org, _t.c.id == id))


def _conflict(error: IntegrityError, values: dict[str, Any]) -> Conflict:
    constraint = violated_constraint(error)
    if "name_key" in constraint:
        return Conflict(
            f"A metric named {values.get('name')!r} already exists in this organization "
            "(names are compared ignoring case); choose another name.",
            "name_taken",
        )
    if "key" in constraint:
        return Conflict(
            f"A metric with key {values.get('key')!r} already exists in this organization; "
            "choose another key.",
            "key_taken",
        )
    raise error
