"""Segment search: a checked filter tree compiled to parameterised SQL over current values,
sorted with keyset pagination. Every statement is scoped to the tenant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, not_, null, select

from customer_metrics.queries.filter_repository import (
    FilterSql,
    SortSpec,
    names_fields,
    split_on,
)
from customer_metrics.queries.filters import Leaf, Node
from customer_metrics.storage import dialect
from customer_metrics.storage.database import Session
from customer_metrics.storage.models import CurrentValue, Customer, table_of
from customer_metrics.tenancy import Tenant
from customer_metrics.values.typed import COLUMN_OF

_c = table_of(Customer)
_cur = table_of(CurrentValue)
# A page sorted by a metric is first looked for among this many customers per hit wanted,
# in value order: enough for filters that one customer in 40 meets.
WALK_PER_HIT = 40


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
        self._sql = FilterSql(self._org, self._dialect)

    async def _read(self, stmt: Any) -> Any:
        # Plans hinge on the parameters (which metric, how many of its rows a range holds).
        return await self._conn.execute(dialect.planned_each_time(stmt))

    async def search(
        self, node: Node | None, sort: list[SortSpec], after: tuple[Any, ...] | None, limit: int
    ) -> list[Hit]:
        if sort and sort[0].metric_ref is not None:
            return await self._search_by_metric(node, sort, after, limit)
        keys, joined = self._sort_keys(sort, _c)
        stmt = self._page(joined, keys, sort, after, limit).where(_c.c.organization_id == self._org)
        if node is not None:
            stmt = stmt.where(self._sql.condition(node))
        return await self._hits(stmt)

    async def _search_by_metric(
        self, node: Node | None, sort: list[SortSpec], after: tuple[Any, ...] | None, limit: int
    ) -> list[Hit]:
        """Sorted by a metric first: the customers that have a value of it come first, read
        in the order of its value index (so a page costs the same however deep the cursor
        is), then those without one. Top-level conditions on that metric apply to its row
        directly (an index range rather than a lookup per customer)."""
        lead, rest = sort[0], sort[1:]
        assert lead.metric_ref is not None
        assert lead.data_type is not None
        pushed, remaining = split_on(node, lead.metric_ref)
        hits: list[Hit] = []
        if after is None or after[0] is not None:
            hits = await self._with_value(lead, rest, pushed, remaining, after, limit)
        # Every current row holds a value of its metric's type (writes are typed, and a
        # data_type changes only while the metric has no values): any condition on the sort
        # metric but not_exists is met only by customers with a value of it.
        if len(hits) == limit or any(leaf.op != "not_exists" for leaf in pushed):
            return hits
        without_after = after if after is not None and after[0] is None else None
        return hits + await self._without_value(lead, rest, node, without_after, limit - len(hits))

    async def _with_value(
        self,
        lead: SortSpec,
        rest: list[SortSpec],
        pushed: list[Leaf],
        remaining: Node | None,
        after: tuple[Any, ...] | None,
        limit: int,
    ) -> list[Hit]:
        if not rest:
            hits = await self._walk(lead, pushed, remaining, after, limit)
            if len(hits) == limit:
                return hits
        # Few matches ahead (or more sort keys, whose order the walk does not follow):
        # every match, in the plan the planner picks.
        return await self._matching(lead, rest, pushed, remaining, after, limit)

    async def _walk(
        self,
        lead: SortSpec,
        pushed: list[Leaf],
        remaining: Node | None,
        after: tuple[Any, ...] | None,
        limit: int,
    ) -> list[Hit]:
        """The page among the next `WALK_PER_HIT x limit` customers in value order (read from
        the value index from the cursor on), checked against the rest of the filter one by
        one. A full page found there is the page: customers further on sort after all of
        them. This is the plan for filters that many customers meet, which the planner,
        with one set of statistics for every metric's values, cannot tell from rare ones."""
        assert lead.metric_ref is not None
        assert lead.data_type is not None
        row = _cur.alias("sort_0")
        value = self._sql.value_column(row, lead.data_type)
        ordered = value.desc() if lead.direction == "desc" else value.asc()
        candidates = (
            select(row.c.customer_ref, value.label("value"))
            .where(*self._lead_rows(row, lead, pushed, after))
            .order_by(ordered, row.c.customer_ref.asc())
            .limit(WALK_PER_HIT * limit)
        )
        if after is not None:
            candidates = candidates.where(
                self._sql.after([value], [lead], after, ident=row.c.customer_ref)
            )
        walked = candidates.subquery("walked")

        def in_order(value: Any, ref: Any) -> list[Any]:
            return [value.desc() if lead.direction == "desc" else value.asc(), ref.asc()]

        # The page is chosen before the customers' names and emails are read (unless the
        # filter is about those), so only its own customers are looked up.
        source: Any = walked
        if names_fields(remaining):
            source = walked.join(
                _c, and_(_c.c.organization_id == self._org, _c.c.id == walked.c.customer_ref)
            )
        page = select(walked.c.customer_ref, walked.c.value).select_from(source)
        if remaining is not None:
            # One lookup per walked customer, in order, until the page is full: the planner
            # would rather join every customer the condition holds for.
            page = page.where(self._sql.condition(remaining, walked.c.customer_ref, per_row=True))
        chosen = (
            page.order_by(*in_order(walked.c.value, walked.c.customer_ref))
            .limit(limit)
            .subquery("page")
        )
        stmt = (
            select(_c.c.id, _c.c.customer_id, _c.c.name, _c.c.email, chosen.c.value)
            .select_from(
                chosen.join(
                    _c, and_(_c.c.organization_id == self._org, _c.c.id == chosen.c.customer_ref)
                )
            )
            .order_by(*in_order(chosen.c.value, _c.c.id))
        )
        return await self._hits(stmt)

    def _lead_rows(
        self, row: Any, lead: SortSpec, pushed: list[Leaf], after: tuple[Any, ...] | None
    ) -> list[Any]:
        """The sort metric's rows with a value that the pushed conditions hold for, from the
        cursor's value on (a bound that the cursor condition implies, but in a form that
        delimits an index range)."""
        assert lead.data_type is not None
        value = self._sql.value_column(row, lead.data_type)
        conditions = [
            row.c.organization_id == self._org,
            row.c.metric_ref == lead.metric_ref,
            row.c[COLUMN_OF[lead.data_type]].is_not(None),
            *(self._sql.on_row(row, leaf) for leaf in pushed),
        ]
        if after is not None:
            bound = self._sql.param(lead.data_type, after[0])
            conditions.append(value <= bound if lead.direction == "desc" else value >= bound)
        return conditions

    async def _matching(
        self,
        lead: SortSpec,
        rest: list[SortSpec],
        pushed: list[Leaf],
        remaining: Node | None,
        after: tuple[Any, ...] | None,
        limit: int,
    ) -> list[Hit]:
        """The page among every customer with a value that meets the filter, in the plan
        the planner picks (which reads every match when it expects few)."""
        assert lead.data_type is not None
        row = _cur.alias("sort_0")
        value = self._sql.value_column(row, lead.data_type)
        base = row.join(_c, and_(_c.c.organization_id == self._org, _c.c.id == row.c.customer_ref))
        keys, joined = self._sort_keys(rest, base, first=1)
        # No missing values here, so the lead key needs no NULLS LAST (which a backward
        # index scan could not give).
        stmt = self._page(
            joined, [value.label("sort_0"), *keys], [lead, *rest], after, limit, plain_lead=True
        ).where(*self._lead_rows(row, lead, pushed, after))
        if remaining is not None:
            stmt = stmt.where(self._sql.condition(remaining))
        return await self._hits(stmt)

    async def _without_value(
        self,
        lead: SortSpec,
        rest: list[SortSpec],
        node: Node | None,
        after: tuple[Any, ...] | None,
        limit: int,
    ) -> list[Hit]:
        assert lead.metric_ref is not None
        assert lead.data_type is not None
        keys, joined = self._sort_keys(rest, _c, first=1)
        missing = null().label("sort_0")
        has_value = exists().where(
            _cur.c.organization_id == _c.c.organization_id,
            _cur.c.customer_ref == _c.c.id,
            _cur.c.metric_ref == lead.metric_ref,
            _cur.c[COLUMN_OF[lead.data_type]].is_not(None),
        )
        stmt = self._page(joined, keys, rest, after[1:] if after else None, limit, head=missing)
        stmt = stmt.where(_c.c.organization_id == self._org, not_(has_value))
        if node is not None:
            stmt = stmt.where(self._sql.condition(node))
        return await self._hits(stmt)

    def _page(
        self,
        joined: Any,
        keys: list[Any],
        sort: list[SortSpec],
        after: tuple[Any, ...] | None,
        limit: int,
        *,
        plain_lead: bool = False,
        head: Any = None,
    ) -> Any:
        """SELECT the hit columns and sort keys in (keys…, id) order, after the cursor."""
        leading = [head] if head is not None else []
        stmt = (
            select(_c.c.id, _c.c.customer_id, _c.c.name, _c.c.email, *leading, *keys)
            .select_from(joined)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(self._sql.after(keys, sort, after))
        order = []
        for index, (key, spec) in enumerate(zip(keys, sort, strict=True)):
            ordered = key.desc() if spec.direction == "desc" else key.asc()
            order.append(ordered if plain_lead and index == 0 else ordered.nulls_last())
        return stmt.order_by(*order, _c.c.id.asc())

    async def _hits(self, stmt: Any) -> list[Hit]:
        rows = await self._read(stmt)
        return [Hit(r[0], r[1], r[2], r[3], (*tuple(r[4:]), r[0])) for r in rows]

    async def count(self, node: Node | None) -> int:
        stmt = select(func.count()).select_from(_c).where(_c.c.organization_id == self._org)
        if node is not None:
            stmt = stmt.where(self._sql.condition(node))
        return int((await self._read(stmt)).scalar_one())

    def _sort_keys(self, sort: list[SortSpec], base: Any, first: int = 0) -> tuple[list[Any], Any]:
        joined: Any = base
        keys = []
        for index, spec in enumerate(sort, first):
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
            keys.append(self._sql.value_column(alias, spec.data_type).label(f"sort_{index}"))
        return keys, joined

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
