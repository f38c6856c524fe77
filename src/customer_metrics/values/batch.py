"""The batch write: up to 10,000 items judged one by one exactly like single writes, stored
in one transaction with bulk statements; every rejected item is reported, none is dropped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from customer_metrics import clock
from customer_metrics.customers.repository import CustomerRepository
from customer_metrics.customers.service import CustomerService
from customer_metrics.errors import InvalidRequest
from customer_metrics.limits import Limits
from customer_metrics.metrics.repository import MetricRepository, MetricRow
from customer_metrics.metrics.service import resolve_refs
from customer_metrics.values.prepare import PreparedWrite, archived_error, prepare_write
from customer_metrics.values.repository import StoredObservation, ValueRepository
from customer_metrics.values.schemas import BATCH_MAX_ITEMS, BatchItem
from customer_metrics.values.service import ValueService

_item = TypeAdapter(BatchItem)
_items = TypeAdapter(list[BatchItem])


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
class _Checked:
    index: int
    customer_id: str
    metric: MetricRow
    write: PreparedWrite


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

    async def write(self, items: list[dict[str, Any]], atomic: bool, create: bool) -> BatchOutcome:
        if len(items) > BATCH_MAX_ITEMS:
            raise InvalidRequest(
                ("body", "values"), f"A batch holds at most {BATCH_MAX_ITEMS} items", "too_long"
            )
        outcome = BatchOutcome()
        parsed = self._parse(items, outcome)
        metrics = await resolve_refs(self._metrics, [item.metric for _, item in parsed])
        checked = self._check(parsed, metrics, outcome)
        refs = await self._customer_refs(checked, create, outcome)
        if atomic and outcome.errors:
            raise BatchRejected(outcome)
        stored = [c for c in checked if c.customer_id in refs and c.index not in outcome.errors]
        outcome.accepted = await self._store(stored, refs, outcome)
        if atomic and outcome.errors:
            raise BatchRejected(outcome)
        return outcome

    def _parse(
        self, items: list[dict[str, Any]], outcome: BatchOutcome
    ) -> list[tuple[int, BatchItem]]:
        try:  # the common case, every item well-formed: one call into pydantic-core
            return list(enumerate(_items.validate_python(items, strict=True)))
        except ValidationError:
            pass  # item by item, to keep the good ones and report each bad one
        parsed = []
        for index, raw in enumerate(items):
            try:
                parsed.append((index, _item.validate_python(raw, strict=True)))
            except ValidationError as error:
                for e in error.errors(include_url=False, include_input=False):
                    outcome.reject(index, ("body", "values", index, *e["loc"]), e["msg"], e["type"])
        return parsed

    def _check(
        self,
        parsed: list[tuple[int, BatchItem]],
        metrics: dict[str, MetricRow],
        outcome: BatchOutcome,
    ) -> list[_Checked]:
        now = clock.now()
        checked = []
        # A batch names the same customers over and over: each id is checked once.
        customer_ids: dict[str, str] = {}
        for index, item in parsed:
            loc: tuple[str | int, ...] = ("body", "values", index)
            metric = metrics.get(item.metric)
            try:
                if metric is None:
                    raise InvalidRequest(
                        (*loc, "metric"),
                        f"No metric {item.metric!r} in this organization",
                        "not_found",
                    )
                if metric.archived:
                    raise InvalidRequest(
                        (*loc, "metric"), archived_error(item.metric).detail, "metric_archived"
                    )
                customer_id = customer_ids.get(item.customer_id)
                if customer_id is None:
                    customer_id = self._customer_rules.check_customer_id(
                        item.customer_id, (*loc, "customer_id")
                    )
                    customer_ids[item.customer_id] = customer_id
                fields = {name: getattr(item, name) for name in item.model_fields_set}
                write = prepare_write(metric, fields, item.model_fields_set, now, self._limits, loc)
            except InvalidRequest as error:
                outcome.reject(index, error.loc, error.detail, error.type)
                continue
            checked.append(_Checked(index, customer_id, metric, write))
        return checked

    async def _customer_refs(
        self, checked: list[_Checked], create: bool, outcome: BatchOutcome
    ) -> dict[str, int]:
        wanted = sorted({c.customer_id for c in checked})
        refs = await self._customers.refs_of(wanted)
        missing = [customer_id for customer_id in wanted if customer_id not in refs]
        if missing and create:
            await self._customers.insert_many_if_absent(missing, clock.now())
            refs.update(await self._customers.refs_of(missing))
        elif missing:
            absent = set(missing)
            for c in checked:
                if c.customer_id in absent:
                    outcome.reject(
                        c.index,
                        ("body", "values", c.index, "customer_id"),
                        f"No customer {c.customer_id!r} (create_customers is false)",
                        "not_found",
                    )
        return refs

    async def _store(
        self, stored: list[_Checked], refs: dict[str, int], outcome: BatchOutcome
    ) -> int:
        """Stores the checked items; returns how many were accepted."""
        recorded_at = clock.now()
        # Same customer, metric and observed_at twice in one batch: the later item wins.
        latest: dict[tuple[int, int, Any], tuple[int, int, StoredObservation]] = {}
        increments = []
        for c in stored:
            if c.write.value is None:
                increments.append(c)
                continue
            customer_ref = refs[c.customer_id]
            observation = StoredObservation(
                c.write.observed_at, recorded_at, c.write.source, c.write.value.columns()
            )
            latest[(customer_ref, c.metric.id, c.write.observed_at)] = (
                customer_ref,
                c.metric.id,
                observation,
            )
        await self._value_repo.record_many(list(latest.values()))
        accepted = len(stored) - len(increments)
        for c in increments:  # after the plain values, in the order sent
            try:
                await self._values.apply(
                    refs[c.customer_id], c.metric, c.write, ("body", "values", c.index, "increment")
                )
            except InvalidRequest as error:  # raised before anything is written (overflow)
                outcome.reject(c.index, error.loc, error.detail, error.type)
            else:
                accepted += 1
        return accepted
