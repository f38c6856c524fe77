"""Filter trees and cursors as SQL conditions over current values: parameterised, scoped to
the tenant, the same on both databases but for what `storage.dialect` tells apart."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, false, not_, or_, select, true
from sqlalchemy.sql import ColumnElement

from customer_metrics.queries.filters import Branch, Leaf, Node
from customer_metrics.storage import dialect
from customer_metrics.storage.models import CurrentValue, Customer, table_of
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


def split_on(node: Node | None, metric_ref: int) -> tuple[list[Leaf], Node | None]:
    """(conditions on `metric_ref` that the whole filter requires — the filter itself or
    children of a top-level `and` —, the rest of the filter or None)."""

    def on_metric(child: Node) -> bool:
        return (
            isinstance(child, Leaf) and child.metric is not None and (child.metric.id == metric_ref)
        )

    if node is None:
        return [], None
    if on_metric(node):
        assert isinstance(node, Leaf)
        return [node], None
    if isinstance(node, Branch) and node.kind == "and":
        pushed = [c for c in node.children if isinstance(c, Leaf) and on_metric(c)]
        others = tuple(c for c in node.children if not on_metric(c))
        return pushed, (Branch("and", others) if others else None)
    return [], node


def names_fields(node: Node | None) -> bool:
    """Whether the filter has a condition on a customer field (not only on metrics)."""
    if node is None:
        return False
    if isinstance(node, Branch):
        return any(names_fields(child) for child in node.children)
    return node.field is not None


class FilterSql:
    """Conditions for one organization's statements on one database."""

    def __init__(self, organization_id: int, dialect_name: str) -> None:
        self._org = organization_id
        self._dialect = dialect_name

    def condition(
        self, node: Node, customer: Any = None, per_row: bool = False
    ) -> ColumnElement[bool]:
        """The filter as SQL about the customer whose ref is `customer` (customers.id);
        `per_row`: each metric condition is a lookup for that customer."""
        customer = _c.c.id if customer is None else customer
        if isinstance(node, Branch):
            parts = [self.condition(child, customer, per_row) for child in node.children]
            if node.kind == "not":
                return not_(parts[0])
            return and_(true(), *parts) if node.kind == "and" else or_(false(), *parts)
        if node.field is not None:
            return self._field_condition(node)
        return self._metric_condition(node, customer, per_row)

    def value_column(self, table: Any, data_type: str) -> Any:
        column = table.c[COLUMN_OF[data_type]]
        if data_type == "NUMBER":
            return dialect.comparable_number(column, self._dialect)
        if data_type == "STRING":
            return dialect.bytewise(column, self._dialect)
        return column

    def param(self, data_type: str, value: Any) -> Any:
        if data_type == "NUMBER":
            return dialect.number_param(value, self._dialect)
        return value

    def _compare(self, column: Any, leaf: Leaf) -> ColumnElement[bool]:
        op, value, kind = leaf.op, leaf.value, leaf.data_type
        if op == "between":
            low, high = value
            return and_(column >= self.param(kind, low), column <= self.param(kind, high))
        if op in ("in", "not_in"):
            members: ColumnElement[bool] = column.in_([self.param(kind, v) for v in value])
            return members if op == "in" else not_(members)
        if op == "contains":
            found: ColumnElement[bool] = dialect.contains(column, value, self._dialect)
            return found
        if op == "starts_with":
            prefixed: ColumnElement[bool] = dialect.starts_with(column, value)
            return prefixed
        param = self.param(kind, value)
        result: ColumnElement[bool] = _COMPARISONS[op](column, param)
        return result

    def _metric_condition(self, leaf: Leaf, customer: Any, per_row: bool) -> ColumnElement[bool]:
        assert leaf.metric is not None
        conditions = [
            _cur.c.organization_id == self._org,
            _cur.c.customer_ref == customer,
            _cur.c.metric_ref == leaf.metric.id,
        ]
        if leaf.op == "changed_since":
            conditions.append(_cur.c.observed_at >= leaf.value)
        elif leaf.op not in ("exists", "not_exists"):
            # A condition on a value holds only where the customer has a value: `not` is
            # then plain negation, and customers without a value are never "equal to"
            # anything.
            conditions.append(self._compare(self.value_column(_cur, leaf.data_type), leaf))
        row = select(_cur.c.customer_ref).where(*conditions)
        found = exists(dialect.per_row(row, self._dialect) if per_row else row)
        return not_(found) if leaf.op == "not_exists" else found

    def _field_condition(self, leaf: Leaf) -> ColumnElement[bool]:
        assert leaf.field is not None
        column = _c.c[leaf.field]
        if leaf.op == "exists":
            return column.is_not(None)
        if leaf.op == "not_exists":
            return column.is_(None)
        return and_(column.is_not(None), self._compare(column, leaf))

    def on_row(self, row: Any, leaf: Leaf) -> ColumnElement[bool]:
        """A condition on the sort metric, applied to the customer's row of it."""
        if leaf.op == "exists":
            return true()
        if leaf.op == "not_exists":
            return false()
        if leaf.op == "changed_since":
            changed: ColumnElement[bool] = row.c.observed_at >= leaf.value
            return changed
        return self._compare(self.value_column(row, leaf.data_type), leaf)

    def after(
        self, keys: list[Any], sort: list[SortSpec], after: tuple[Any, ...], ident: Any = None
    ) -> Any:
        """Rows strictly after the cursor in (key1, key2, …, id) order, missing values last;
        `ident` is the customer ref column (customers.id)."""
        *values, last_id = after
        alternatives = []
        equal_so_far: list[Any] = []
        for key, spec, value in zip(keys, sort, values, strict=True):
            kind = spec.data_type or ("DATETIME" if spec.field == "time_created" else "STRING")
            if value is None:
                equal_so_far.append(key.is_(None))
                continue  # nothing sorts after a missing value but other missing values
            param = self.param(kind, value)
            beyond = key < param if spec.direction == "desc" else key > param
            alternatives.append(and_(*equal_so_far, or_(beyond, key.is_(None))))
            equal_so_far.append(key == param)
        alternatives.append(and_(*equal_so_far, (_c.c.id if ident is None else ident) > last_id))
        return or_(*alternatives)
