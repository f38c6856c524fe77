"""Parsing and type-checking a filter tree into plain data the repository compiles to
parameterised SQL. Every problem is a 422 whose `loc` is the path to the node."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from customer_metrics.errors import InvalidRequest
from customer_metrics.metrics.repository import MetricRow
from customer_metrics.text import is_clean
from customer_metrics.values import typed

MAX_DEPTH = 8
MAX_LEAVES = 50
FIELDS = {"customer_id": "STRING", "name": "STRING", "email": "STRING", "time_created": "DATETIME"}
ORDERED = frozenset({"NUMBER", "INTEGER", "STRING", "DATE", "DATETIME"})
OPERATORS = {
    "eq",
    "ne",
    "lt",
    "lte",
    "gt",
    "gte",
    "between",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "exists",
    "not_exists",
    "changed_since",
}
COMPARISONS = {"lt", "lte", "gt", "gte", "between"}
TEXT_ONLY = {"contains", "starts_with"}
NO_VALUE = {"exists", "not_exists"}
Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Leaf:
    op: str
    data_type: str
    metric: MetricRow | None = None
    field: str | None = None
    # One value, a (low, high) pair for between, a tuple for in/not_in, None for exists.
    value: Any = None


@dataclass(frozen=True, slots=True)
class Branch:
    kind: str  # "and" | "or" | "not"
    children: tuple[Node, ...]


Node = Leaf | Branch


def referenced_metrics(node: dict[str, Any] | None, loc: Loc = ("body", "filter")) -> list[str]:
    """Every metric ref in the tree (resolved in one query before parsing)."""
    if not isinstance(node, dict):
        return []
    refs = [node["metric"]] if isinstance(node.get("metric"), str) else []
    for kind in ("and", "or"):
        if isinstance(node.get(kind), list):
            for child in node[kind]:
                refs += referenced_metrics(child)
    if isinstance(node.get("not"), dict):
        refs += referenced_metrics(node["not"])
    return refs


class FilterParser:
    def __init__(self, metrics: dict[str, MetricRow], max_string: int) -> None:
        self._metrics = metrics
        self._max_string = max_string
        self._leaves = 0

    def parse(self, node: Any, loc: Loc = ("body", "filter"), depth: int = 1) -> Node:
        if depth > MAX_DEPTH:
            raise InvalidRequest(
                loc, f"Filter is nested deeper than {MAX_DEPTH} levels", "too_deep"
            )
        if not isinstance(node, dict):
            raise InvalidRequest(loc, "A filter node must be an object", "dict_type")
        branch = [k for k in ("and", "or", "not") if k in node]
        if branch:
            return self._branch(node, branch, loc, depth)
        self._leaves += 1
        if self._leaves > MAX_LEAVES:
            raise InvalidRequest(loc, f"A filter holds at most {MAX_LEAVES} conditions", "too_long")
        return self._leaf(node, loc)

    def _branch(self, node: dict[str, Any], kinds: list[str], loc: Loc, depth: int) -> Branch:
        if len(kinds) > 1 or len(node) > 1:
            raise InvalidRequest(
                loc, "A branch node has exactly one key: and, or or not", "extra_forbidden"
            )
        kind = kinds[0]
        body = node[kind]
        if kind == "not":
            return Branch("not", (self.parse(body, (*loc, "not"), depth + 1),))
        if not isinstance(body, list) or not body:
            raise InvalidRequest(
                (*loc, kind), f"{kind} takes a non-empty list of nodes", "list_type"
            )
        children = tuple(
            self.parse(child, (*loc, kind, index), depth + 1) for index, child in enumerate(body)
        )
        return Branch(kind, children)

    def _leaf(self, node: dict[str, Any], loc: Loc) -> Leaf:
        allowed = {"metric", "field", "op", "value"}
        for key in node:
            if key not in allowed:
                raise InvalidRequest(
                    (*loc, key), "Extra inputs are not permitted", "extra_forbidden"
                )
        if ("metric" in node) == ("field" in node):
            raise InvalidRequest(
                loc, "A condition names exactly one of metric or field", "value_error"
            )
        op = node.get("op")
        if op not in OPERATORS:
            raise InvalidRequest(
                (*loc, "op"), f"op must be one of: {', '.join(sorted(OPERATORS))}", "literal_error"
            )
        metric = None
        field = None
        if "metric" in node:
            ref = node["metric"]
            metric = self._metrics.get(ref) if isinstance(ref, str) else None
            if metric is None:
                raise InvalidRequest(
                    (*loc, "metric"), f"No metric {ref!r} in this organization", "not_found"
                )
            data_type = metric.data_type
        else:
            field = node["field"]
            if field not in FIELDS:
                raise InvalidRequest(
                    (*loc, "field"), f"field must be one of: {', '.join(FIELDS)}", "literal_error"
                )
            data_type = FIELDS[field]
            if op == "changed_since":
                raise InvalidRequest(
                    (*loc, "op"), "changed_since applies to metrics only", "value_error"
                )
        self._check_op(op, data_type, (*loc, "op"))
        value = self._value(op, data_type, node, loc, field is not None)
        return Leaf(op=op, data_type=data_type, metric=metric, field=field, value=value)

    def _check_op(self, op: str, data_type: str, loc: Loc) -> None:
        if op in TEXT_ONLY and data_type != "STRING":
            raise InvalidRequest(
                loc, f"{op} applies to STRING values, not {data_type}", "value_error"
            )
        if op in COMPARISONS and data_type not in ORDERED:
            raise InvalidRequest(loc, f"{op} does not apply to {data_type} values", "value_error")

    def _value(
        self, op: str, data_type: str, node: dict[str, Any], loc: Loc, is_field: bool
    ) -> Any:
        vloc = (*loc, "value")
        if op in NO_VALUE:
            if "value" in node:
                raise InvalidRequest(vloc, f"{op} takes no value", "extra_forbidden")
            return None
        if "value" not in node:
            raise InvalidRequest(vloc, "Field required", "missing")
        raw = node["value"]
        if op == "changed_since":
            return typed.parse_timestamp(raw, vloc)
        if op == "between":
            if not isinstance(raw, list) or len(raw) != 2:
                raise InvalidRequest(vloc, "between takes [low, high]", "list_type")
            return (
                self._one(data_type, raw[0], (*vloc, 0), is_field),
                self._one(data_type, raw[1], (*vloc, 1), is_field),
            )
        if op in ("in", "not_in"):
            if not isinstance(raw, list) or not 1 <= len(raw) <= 500:
                raise InvalidRequest(vloc, f"{op} takes a list of 1 to 500 values", "list_type")
            return tuple(self._one(data_type, v, (*vloc, i), is_field) for i, v in enumerate(raw))
        if op in TEXT_ONLY:
            if not isinstance(raw, str) or not raw:
                raise InvalidRequest(vloc, f"{op} takes a non-empty string", "string_type")
            return _clean(raw, vloc)
        return self._one(data_type, raw, vloc, is_field)

    def _one(self, data_type: str, raw: Any, loc: Loc, is_field: bool) -> Any:
        if is_field and data_type == "DATETIME":
            return typed.parse_timestamp(raw, loc)
        if is_field:
            if not isinstance(raw, str):
                raise InvalidRequest(loc, "Input should be a string", "string_type")
            return _clean(raw, loc)
        # Filters compare with stored values, so they take the same JSON as a write (no
        # allowed_values check: a filter on a retired value is still a fair question).
        return typed.parse_value(data_type, raw, loc, None, self._max_string).value


def _clean(value: str, loc: Loc) -> str:
    if not is_clean(value):
        raise InvalidRequest(
            loc, "String holds a control character or a lone surrogate", "string_invalid_character"
        )
    return value


def changed_since(leaf: Leaf) -> datetime:
    assert isinstance(leaf.value, datetime)
    return leaf.value
