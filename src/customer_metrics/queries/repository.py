"""Segment search: a checked filter tree compiled to parameterised SQL over current values,
sorted with keyset pagination. Every statement is scoped to the tenant."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, false, func, not_, or_, select, true
from sqlalchemy.sql import ColumnElement

from customer_metrics.queries.filters import Branch, Leaf, Node
from customer_metrics.storage import dialect
from customer_metrics.storage.database import Session
from customer_metrics.storage.models import CurrentValue, Customer, table_of
from customer_metrics.tenancy import Tenant
from customer_metrics.values.typed import COLUMN_OF

_COMPARISONS = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
}
_c = table_of(Customer)
_cur = table_of(CurrentValue)


@dataclass(frozen=True, slots=True)
class SortSpec:
    """One sort key: a metric (by id and data_type) or a customer field."""

    direction: str
    metric_ref: int | None = None
    data_type: str | None = None
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    ref: int
    customer_id: str
    name: str | None
    email: str | None
    sort_values: tuple[Any, ...]


class SearchRepository:
    def __init__(self, session: Session, tenant: Tenant) -> None:
        self._conn = session.connection
        self._org = tenant.organization_id
        self._dialect = self._conn.dialect.name

    # -- filters -----------------------------------------------------------------------------

    def _condition(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, Branch):
            parts = [self._condition(child) for child in node.children]
            if node.kind == "not":
                return not_(parts[0])
            return and_(true(), *parts) if node.kind == "and" else or_(false(), *parts)
        if node.field is not None:
            return self._field_condition(node)
        return self._metric_condition(node)

    def _value_column(self, table: Any, data_type: str) -> Any:
        column = table.c[COLUMN_OF[data_type]]
        if data_type == "NUMBER":
            return dialect.comparable_number(column, self._dialect)
        if data_type == "STRING":
            return dialect.bytewise(column, self._dialect)
        return column

    def _param(self, data_type: str, value: Any) -> Any:
        if data_type == "NUMBER":
            return dialect.number_param(value, self._dialect)
        return value

    def _compare(self, column: Any, leaf: Leaf) -> ColumnElement[bool]:
        op, value, kind = leaf.op, leaf.value, leaf.data_type
        if op == "between":
            low, high = value
            return and_(column >= self._param(kind, low), column <= self._param(kind, high))
        if op in ("in", "not_in"):
            members: ColumnElement[bool] = column.in_([self._param(kind, v) for v in value])
            return members if op == "in" else not_(members)
        if op == "contains":
            found: ColumnElement[bool] = dialect.contains(column, value, self._dialect)
            return found
        if op == "starts_with":
            prefixed: ColumnElement[bool] = dialect.starts_with(column, value)
            return prefixed
        param = self._param(kind, value)
        result: ColumnElement[bool] = _COMPARISONS[op](column, param)
        return result

    def _metric_condition(self, leaf: Leaf) -> ColumnElement[bool]:
        assert leaf.metric is not None
        present = and_(
            _cur.c.organization_id == _c.c.organization_id,
            _cur.c.customer_ref == _c.c.id,
            _cur.c.metric_ref == leaf.metric.id,
        )
        if leaf.op in ("exists", "not_exists"):
            found = exists().where(present)
            return found if leaf.op == "exists" else not_(found)
        if leaf.op == "changed_since":
            return exists().where(present, _cur.c.observed_at >= leaf.value)
        # A condition on a value holds only where the customer has a value: `not` is then
        # plain negation, and customers without a value are never "equal to" anything.
        return exists().where(
            present, self._compare(self._value_column(_cur, leaf.data_type), leaf)
        )

    def _field_condition(self, leaf: Leaf) -> ColumnElement[bool]:
        assert leaf.field is not None
        column = _c.c[leaf.field]
        if leaf.op == "exists":
            return column.is_not(None)
        if leaf.op == "not_exists":
            return column.is_(None)
        return and_(column.is_not(None), self._compare(column, leaf))

    # -- search ------------------------------------------------------------------------------

    async def search(
        self, node: Node | None, sort: list[SortSpec], after: tuple[Any, ...] | None, limit: int
    ) -> list[Hit]:
        keys, joined = self._sort_keys(sort)
        stmt = (
            select(_c.c.id, _c.c.customer_id, _c.c.name, _c.c.email, *keys)
            .select_from(joined)
            .where(_c.c.organization_id == self._org)
            .limit(limit)
        )
        if node is not None:
            stmt = stmt.where(self._condition(node))
        if after is not None:
            stmt = stmt.where(self._after(keys, sort, after))
        order = []
        for key, spec in zip(keys, sort, strict=True):
            order.append((key.desc() if spec.direction == "desc" else key.asc()).nulls_last())
        stmt = stmt.order_by(*order, _c.c.id.asc())
        rows = await self._conn.execute(stmt)
        return [Hit(r[0], r[1], r[2], r[3], (*tuple(r[4:]), r[0])) for r in rows]

    async def count(self, node: Node | None) -> int:
        stmt = select(func.count()).select_from(_c).where(_c.c.organization_id == self._org)
        if node is not None:
            stmt = stmt.where(self._condition(node))
        return int((await self._conn.execute(stmt)).scalar_one())

    def _sort_keys(self, sort: list[SortSpec]) -> tuple[list[Any], Any]:
        joined: Any = _c
        keys = []
        for index, spec in enumerate(sort):
            if spec.field is not None:
                field = _c.c[spec.field]
                keys.append(
                    field
                    if spec.field == "time_created"
                    else dialect.bytewise(field, self._dialect)
                )
                continue
            assert spec.metric_ref is not None
            assert spec.data_type is not None
            alias = _cur.alias(f"sort_{index}")
            joined = joined.outerjoin(
                alias,
                and_(
                    alias.c.organization_id == _c.c.organization_id,
                    alias.c.customer_ref == _c.c.id,
                    alias.c.metric_ref == spec.metric_ref,
                ),
            )
            keys.append(self._value_column(alias, spec.data_type).label(f"sort_{index}"))
        return keys, joined

    def _after(self, keys: list[Any], sort: list[SortSpec], after: tuple[Any, ...]) -> Any:
        """Rows strictly after the cursor in (key1, key2, …, id) order, missing values last."""
        *values, last_id = after
        alternatives = []
        equal_so_far: list[Any] = []
        for key, spec, value in zip(keys, sort, values, strict=True):
            kind = spec.data_type or ("DATETIME" if spec.field == "time_created" else "STRING")
            if value is None:
                equal_so_far.append(key.is_(None))
                continue  # nothing sorts after a missing value but other missing values
            param = self._param(kind, value)
            beyond = key < param if spec.direction == "desc" else key > param
            alternatives.append(and_(*equal_so_far, or_(beyond, key.is_(None))))
            equal_so_far.append(key == param)
        alternatives.append(and_(*equal_so_far, _c.c.id > last_id))
        return or_(*alternatives)

    async def included_values(
        self, customer_refs: list[int], metric_refs: list[int]
    ) -> list[tuple[int, int, dict[str, Any]]]:
        if not customer_refs or not metric_refs:
            return []
        stmt = select(_cur).where(
            _cur.c.organization_id == self._org,
            _cur.c.customer_ref.in_(customer_refs),
            _cur.c.metric_ref.in_(metric_refs),
        )
        return [
            (r.customer_ref, r.metric_ref, {c: getattr(r, c) for c in COLUMN_OF.values()})
            for r in await self._conn.execute(stmt)
        ]
