"""The rules for metric definitions. Raises domain errors; never commits."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Any

from customer_metrics import clock
from customer_metrics.errors import Conflict, InvalidRequest, NotFound
from customer_metrics.limits import ALLOWED_VALUES_MAX, UNIT_MAX, Limits, check_length
from customer_metrics.metrics import keys
from customer_metrics.metrics.refs import KEY_PATTERN, MetricRef, format_metric_id, parse_ref
from customer_metrics.metrics.repository import MetricFilter, MetricRepository, MetricRow
from customer_metrics.metrics.schemas import MetricCreate, MetricUpdate
from customer_metrics.text import comparison_key
from customer_metrics.values.repository import Usage, ValueRepository

# Each round lets at least one of the concurrent creates of one derived key through.
KEY_ATTEMPTS = 64


class KnownMetrics:
    """Metric definitions this worker has read for value writes, by organization and parsed
    ref (`METRIC-005` and `5` are one entry). A write that uses one checks, in the statement
    that stores the value, that the definition still stands as remembered
    (`definition_still_allows`); when it does not, the write is run again from the database
    (errors.StaleLookup), which remembers the fresh definition. Bounded in entries and in
    size: only what a write uses is kept (no description), and a metric with long
    allowed_values is not remembered; the oldest entry is forgotten first."""

    MAX_ALLOWED_CHARS = 4096

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        self._rows: OrderedDict[tuple[int, int | None, str | None], MetricRow] = OrderedDict()

    def get(self, organization_id: int, ref: MetricRef) -> MetricRow | None:
        return self._rows.get((organization_id, ref.id, ref.key))

    def remember(self, organization_id: int, ref: MetricRef, row: MetricRow) -> None:
        entry = (organization_id, ref.id, ref.key)
        if row.allowed_values and sum(map(len, row.allowed_values)) > self.MAX_ALLOWED_CHARS:
            self._rows.pop(entry, None)
            return
        if entry not in self._rows and len(self._rows) >= self._size:
            self._rows.popitem(last=False)
        self._rows[entry] = replace(row, description=None)


class MetricService:
    def __init__(
        self,
        repository: MetricRepository,
        values: ValueRepository,
        limits: Limits,
        known: KnownMetrics | None = None,
    ) -> None:
        self._repo = repository
        self._values = values
        self._limits = limits
        self._known = known

    async def create(self, body: MetricCreate) -> MetricRow:
        self._check_texts(body.name, body.description, body.unit, "name" in body.model_fields_set)
        _check_allowed_values(body.data_type, body.allowed_values, self._limits)
        if body.key is not None and not KEY_PATTERN.match(body.key):
            raise InvalidRequest(
                ("body", "key"),
                "Key must start with a lower-case letter and hold only a-z, 0-9 and _ "
                "(at most 64 characters)",
                "string_pattern_mismatch",
            )
        now = clock.now()
        values = {
            "name": body.name,
            "name_key": comparison_key(body.name),
            "description": body.description,
            "data_type": body.data_type,
            "unit": body.unit,
            "allowed_values": body.allowed_values,
            "archived": False,
            "time_created": now,
            "time_updated": now,
        }
        if body.key is not None:
            created = await self._repo.insert_numbered({"key": body.key, **values}, False)
            assert created is not None
            return created
        base = keys.base_key(body.name)
        taken: set[str] = set()
        for _ in range(KEY_ATTEMPTS):
            # Optimistic: try the base key first; on a clash (an older metric, or a concurrent
            # create) look at the keys in use and take the next free suffix.
            key = keys.first_free(base, taken)
            created = await self._repo.insert_numbered({"key": key, **values}, True)
            if created is not None:
                return created
            taken = await self._repo.keys_starting_with(base[:56])
        raise Conflict(
            "Could not derive a free key for this name under concurrent creates; retry, "
            "or send an explicit key.",
            "key_taken",
        )

    async def get(self, ref: str) -> MetricRow:
        parsed = parse_ref(ref)
        row = await self._repo.get(id=parsed.id, key=parsed.key) if parsed else None
        if row is None:
            raise NotFound(f"No metric {ref!r} in this organization.")
        return row

    async def get_for_write(self, ref: str, refresh: bool = False) -> tuple[MetricRow, bool]:
        """The metric a value write names, and whether it was remembered rather than read
        (the write must then check it in its own statement: see KnownMetrics). Without a
        memory (SQLite), always read; with `refresh` (a request run again because what was
        remembered went stale), read and remember afresh."""
        parsed = parse_ref(ref)
        if self._known is None or parsed is None:
            return await self.get(ref), False
        org = self._repo.organization_id
        if not refresh and (remembered := self._known.get(org, parsed)) is not None:
            return remembered, True
        row = await self.get(ref)
        self._known.remember(org, parsed, row)
        return row, False

    async def list_page(self, where: MetricFilter, after_id: int, limit: int) -> list[MetricRow]:
        return await self._repo.list_page(where, after_id, limit)

    async def update(self, ref: str, body: MetricUpdate) -> MetricRow:
        current = await self.get(ref)
        sent = body.model_fields_set
        for field in ("name", "archived", "data_type"):
            if field in sent and getattr(body, field) is None:
                raise InvalidRequest(("body", field), f"{field} cannot be null", "null_not_allowed")
        self._check_texts(body.name, body.description, body.unit, "name" in sent)
        changes: dict[str, Any] = {
            field: getattr(body, field)
            for field in sent
            if getattr(body, field) != getattr(current, field)
        }
        if "name" in changes:
            changes["name_key"] = comparison_key(changes["name"])
        data_type = changes.get("data_type", current.data_type)
        allowed = changes.get("allowed_values", current.allowed_values)
        if "data_type" in changes or "allowed_values" in changes:
            _check_allowed_values(data_type, allowed, self._limits)
        if not changes:
            return current
        if "data_type" in changes and await self._values.metric_has_values(current.id):
            raise Conflict(
                f"data_type cannot change: metric {ref!r} already has values stored as "
                f"{current.data_type}. Delete its values (or the metric, with cascade) first.",
                "metric_in_use",
            )
        # Clearing allowed_values (null) lifts the restriction: every stored value stays valid.
        if "allowed_values" in changes and current.allowed_values and allowed is not None:
            removed = sorted(set(current.allowed_values) - set(allowed or []))
            in_use = await self._values.strings_in_use(current.id, removed) if removed else []
            if in_use:
                raise Conflict(
                    f"allowed_values cannot drop {in_use}: values already recorded use them.",
                    "metric_in_use",
                )
        changes["time_updated"] = clock.now()
        return await self._repo.update(current.id, changes)

    async def delete(self, ref: str, cascade: bool) -> None:
        current = await self.get(ref)
        if await self._values.metric_has_values(current.id):
            if not cascade:
                raise Conflict(
                    f"Metric {ref!r} has values; delete with ?cascade=true to delete the metric "
                    "and all its values, or archive it to keep its history.",
                    "metric_in_use",
                )
            await self._values.delete_metric_values(current.id)
        await self._repo.delete(current.id)

    async def usage(self, row: MetricRow) -> Usage:
        return await self._values.usage(row.id)

    def _check_texts(
        self, name: str | None, description: str | None, unit: str | None, name_sent: bool
    ) -> None:
        if name_sent and name is not None:
            check_length(("body", "name"), name, self._limits.name)
        if description is not None:
            check_length(("body", "description"), description, self._limits.description, 0)
        if unit is not None:
            check_length(("body", "unit"), unit, UNIT_MAX)


async def resolve_refs(repository: MetricRepository, refs: list[str]) -> dict[str, MetricRow]:
    """Many refs in one query: {ref: metric} for those that name a metric."""
    parsed = {ref: parse_ref(ref) for ref in set(refs)}
    ids = sorted({p.id for p in parsed.values() if p and p.id is not None})
    keys_ = sorted({p.key for p in parsed.values() if p and p.key is not None})
    rows = await repository.get_many(ids, keys_)
    by_id = {row.id: row for row in rows}
    by_key = {row.key: row for row in rows}
    resolved = {}
    for ref, p in parsed.items():
        row = (by_id.get(p.id) if p.id is not None else by_key.get(p.key or "")) if p else None
        if row is not None:
            resolved[ref] = row
    return resolved


def _check_allowed_values(data_type: str, allowed: list[str] | None, limits: Limits) -> None:
    if allowed is None:
        return
    loc: tuple[str | int, ...] = ("body", "allowed_values")
    if data_type != "STRING":
        raise InvalidRequest(
            loc, f"allowed_values applies only to STRING metrics, not {data_type}", "value_error"
        )
    if not 1 <= len(allowed) <= ALLOWED_VALUES_MAX:
        raise InvalidRequest(
            loc, f"allowed_values must hold 1 to {ALLOWED_VALUES_MAX} entries", "value_error"
        )
    if len(set(allowed)) != len(allowed):
        raise InvalidRequest(loc, "allowed_values must not repeat an entry", "value_error")
    for index, value in enumerate(allowed):
        check_length((*loc, index), value, limits.string_value)


def metric_id(row: MetricRow) -> str:
    return format_metric_id(row.id)
