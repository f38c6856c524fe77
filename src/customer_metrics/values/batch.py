"""The batch write: up to 10,000 items judged one by one exactly like single writes, stored
in one transaction with bulk statements; every rejected item is reported, none is dropped."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError

from customer_metrics import clock
from customer_metrics.customers.repository import CustomerRepository
from customer_metrics.customers.service import CustomerService
from customer_metrics.errors import InvalidRequest
from customer_metrics.limits import Limits
from customer_metrics.metrics.repository import MetricRepository, MetricRow
from customer_metrics.metrics.service import resolve_refs
from customer_metrics.values.prepare import (
    PreparedWrite,
    archived_error,
    check_source,
    prepare_value,
    prepare_write,
)
from customer_metrics.values.repository import ObservationRows, PreparedRows, ValueRepository
from customer_metrics.values.schemas import BATCH_MAX_ITEMS, BatchItem, BatchItemFields
from customer_metrics.values.service import ValueService
from customer_metrics.values.typed import COLUMN_OF

_item = TypeAdapter(BatchItem)
# The rules of BatchItem, giving plain dicts that hold only the fields sent: the whole list in
# one call when every item is well-formed (a BatchItem model per item cost three times as
# much). When some item is not, each one goes through BatchItem, which words the errors.
_all_fields = TypeAdapter(list[BatchItemFields])


@dataclass(slots=True)
class BatchOutcome:
    accepted: int = 0
    errors: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def reject(self, index: int, loc: tuple[str | int, ...], msg: str, type_: str) -> None:
        self.errors.setdefault(index, []).append({"type": type_, "loc": list(loc), "msg": msg})


class BatchRejected(Exception):
    """Atomic batch with at least one bad item: nothing is stored."""

    def __init__(self, outcome: BatchOutcome) -> None:
        super().__init__("batch rejected")
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class _Increment:
    index: int
    customer_id: str
    metric: MetricRow
    write: PreparedWrite


# A checked value item, as a tuple (10,000 of them a batch): customer_id (normalised),
# metric, observed_at, source, the typed value, and the item's index.
_Value = tuple[str, MetricRow, datetime, str | None, Any, int]


@dataclass(slots=True)
class _Checked:
    values: list[_Value] = field(default_factory=list)
    increments: list[_Increment] = field(default_factory=list)

    def customer_ids(self) -> set[str]:
        return {v[0] for v in self.values} | {i.customer_id for i in self.increments}


@dataclass(slots=True)
class CheckedBatch:
    """A batch judged against the metrics as read (`BatchService.check`), ready to store."""

    parsed: list[tuple[int, dict[str, Any]]]
    malformed: BatchOutcome  # the items that failed the schema: whatever the metrics
    metrics: dict[str, MetricRow]
    atomic: bool
    create: bool
    checked: _Checked = field(default_factory=_Checked)
    outcome: BatchOutcome = field(default_factory=BatchOutcome)
    # What `_prepare` found: the customers that exist (id → ref), those to create, and the
    # values of the first ready to write; the values of the second wait for their refs.
    refs: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    prepared: PreparedRows | None = None
    waiting: list[_Value] = field(default_factory=list)


class BatchService:
    def __init__(
        self,
        values: ValueService,
        value_repo: ValueRepository,
        metrics: MetricRepository,
        customers: CustomerRepository,
        customer_rules: CustomerService,
        limits: Limits,
    ) -> None:
        self._values = values
        self._value_repo = value_repo
        self._metrics = metrics
        self._customers = customers
        self._customer_rules = customer_rules
        self._limits = limits

    async def check(self, items: list[dict[str, Any]], atomic: bool, create: bool) -> CheckedBatch:
        """Judges every item and makes the rows to write. It reads (the metrics and customers
        the items name) and writes nothing, so it may run before the write transaction: on
        SQLite the write lock is not held meanwhile. Raises BatchRejected for an atomic
        batch with a bad item."""
        if len(items) > BATCH_MAX_ITEMS:
            raise InvalidRequest(
                ("body", "values"), f"A batch holds at most {BATCH_MAX_ITEMS} items", "too_long"
            )
        malformed = BatchOutcome()
        parsed = self._parse(items, malformed)
        metrics = await resolve_refs(self._metrics, [item["metric"] for _, item in parsed])
        batch = CheckedBatch(parsed, malformed, metrics, atomic, create)
        await self._judge(batch)
        if atomic and batch.outcome.errors:
            raise BatchRejected(batch.outcome)
        return batch

    async def store(self, batch: CheckedBatch) -> BatchOutcome:
        """Stores what `check` accepted; run inside the write transaction. What `check` read
        is read again first: when a metric changed meanwhile (archived, retyped, deleted,
        created) or a customer was erased, every item is judged again, as if the batch had
        arrived after the change."""
        metrics = await resolve_refs(self._metrics, [item["metric"] for _, item in batch.parsed])
        if metrics != batch.metrics or not await self._customers.all_exist(
            sorted(set(batch.refs.values()))
        ):
            batch.metrics = metrics
            await self._judge(batch)
        outcome = batch.outcome
        if batch.atomic and outcome.errors:
            raise BatchRejected(outcome)
        refs, now = batch.refs, clock.now()
        if batch.missing:  # create_customers: the rest of the values once they have refs
            refs = {**refs, **await self._customers.refs_of(batch.missing)}  # made meanwhile?
            new = [customer_id for customer_id in batch.missing if customer_id not in refs]
            await self._customers.insert_many_if_absent(new, now)
            refs.update(await self._customers.refs_of(new))
            await self._value_repo.record_rows(_rows(batch.waiting, refs, now))
        if batch.prepared is not None:
            await self._value_repo.record_prepared(batch.prepared, recorded_at=now)
        outcome.accepted = sum(1 for v in batch.checked.values if v[0] in refs)
        outcome.accepted += await self._apply_increments(batch.checked, refs, outcome)
        if batch.atomic and outcome.errors:
            raise BatchRejected(outcome)
        return outcome

    async def _judge(self, batch: CheckedBatch) -> None:
        batch.outcome = BatchOutcome(errors=dict(batch.malformed.errors))
        batch.checked = self._check(batch.parsed, batch.metrics, batch.outcome)
        await self._prepare(batch)

    async def _prepare(self, batch: CheckedBatch) -> None:
        """The customers' refs, and the rows of those that exist, made ready to write."""
        checked, outcome = batch.checked, batch.outcome
        wanted = sorted(checked.customer_ids())
        refs = await self._customers.refs_of(wanted)
        missing = [customer_id for customer_id in wanted if customer_id not in refs]
        if missing and not batch.create:
            _reject_unknown(checked, set(missing), outcome)
            missing = []
        values = _latest(checked.values)
        known = [v for v in values if v[0] in refs]
        batch.refs, batch.missing = refs, missing
        batch.waiting = [v for v in values if v[0] not in refs] if missing else []
        batch.prepared = self._value_repo.prepare_rows(_rows(known, refs, clock.now()))

    def _parse(
        self, items: list[dict[str, Any]], outcome: BatchOutcome
    ) -> list[tuple[int, dict[str, Any]]]:
        try:  # the common case, every item well-formed: one call into pydantic-core
            valid = _all_fields.validate_python(items, strict=True)
            return list(enumerate(cast(list[dict[str, Any]], valid)))
        except ValidationError:
            pass  # item by item, to keep the good ones and report each bad one
        parsed = []
        for index, raw in enumerate(items):
            try:
                item = _item.validate_python(raw, strict=True)
            except ValidationError as error:
                for e in error.errors(include_url=False, include_input=False):
                    outcome.reject(index, ("body", "values", index, *e["loc"]), e["msg"], e["type"])
            else:
                parsed.append(
                    (index, {name: getattr(item, name) for name in item.model_fields_set})
                )
        return parsed

    def _check(
        self,
        parsed: list[tuple[int, dict[str, Any]]],
        metrics: dict[str, MetricRow],
        outcome: BatchOutcome,
    ) -> _Checked:
        """Each item judged as a single write is (the same checks, in the same order); the
        items are the sent fields themselves, so nothing is copied per item."""
        now = clock.now()
        limits = self._limits
        checked = _Checked()
        # A batch names the same customers over and over: each id is checked once.
        customer_ids: dict[str, str] = {}
        for index, item in parsed:
            loc: tuple[str | int, ...] = ("body", "values", index)
            metric = metrics.get(item["metric"])
            try:
                if metric is None:
                    raise InvalidRequest(
                        (*loc, "metric"),
                        f"No metric {item['metric']!r} in this organization",
                        "not_found",
                    )
                if metric.archived:
                    raise InvalidRequest(
                        (*loc, "metric"), archived_error(item["metric"]).detail, "metric_archived"
                    )
                customer_id = customer_ids.get(item["customer_id"])
                if customer_id is None:
                    customer_id = self._customer_rules.check_customer_id(
                        item["customer_id"], (*loc, "customer_id")
                    )
                    customer_ids[item["customer_id"]] = customer_id
                if "increment" in item:
                    write = prepare_write(metric, item, item, now, limits, loc)
                    checked.increments.append(_Increment(index, customer_id, metric, write))
                    continue
                source = check_source(item, loc)
                value, observed_at = prepare_value(metric, item, item, now, limits, loc)
            except InvalidRequest as error:
                outcome.reject(index, error.loc, error.detail, error.type)
                continue
            checked.values.append((customer_id, metric, observed_at, source, value, index))
        return checked

    async def _apply_increments(
        self, checked: _Checked, refs: dict[str, int], outcome: BatchOutcome
    ) -> int:
        """The increments of known customers, after the plain values, in the order sent;
        returns how many were accepted."""
        accepted = 0
        for c in checked.increments:
            if c.customer_id not in refs:
                continue
            try:
                await self._values.apply(
                    refs[c.customer_id], c.metric, c.write, ("body", "values", c.index, "increment")
                )
            except InvalidRequest as error:  # raised before anything is written (overflow)
                outcome.reject(c.index, error.loc, error.detail, error.type)
            else:
                accepted += 1
        return accepted


def _reject_unknown(checked: _Checked, absent: set[str], outcome: BatchOutcome) -> None:
    """create_customers is false: each item naming a customer that does not exist."""
    rejected = [(v[5], v[0]) for v in checked.values if v[0] in absent]
    rejected += [(i.index, i.customer_id) for i in checked.increments if i.customer_id in absent]
    for index, customer_id in sorted(rejected):
        outcome.reject(
            index,
            ("body", "values", index, "customer_id"),
            f"No customer {customer_id!r} (create_customers is false)",
            "not_found",
        )


def _latest(values: list[_Value]) -> list[_Value]:
    """Same customer, metric and observed_at twice in one batch: the later item wins."""
    keys = [(v[0], v[1].id, v[2]) for v in values]
    last = dict(zip(keys, values, strict=True))
    return values if len(last) == len(values) else list(last.values())


def _rows(values: list[_Value], refs: dict[str, int], recorded_at: datetime) -> ObservationRows:
    """The checked values as one list per column."""
    columns: dict[str, list[Any]] = {}
    types = {v[1].data_type for v in values}
    if len(types) == 1:  # the usual batch: every value in one column
        columns[COLUMN_OF[types.pop()]] = [v[4] for v in values]
    else:
        for data_type in types:
            column = COLUMN_OF[data_type]
            columns[column] = [v[4] if v[1].data_type == data_type else None for v in values]
    return ObservationRows(
        customer_refs=[refs[v[0]] for v in values],
        metric_refs=[v[1].id for v in values],
        observed_at=[v[2] for v in values],
        sources=[v[3] for v in values],
        values=columns,
        recorded_at=recorded_at,
    )
