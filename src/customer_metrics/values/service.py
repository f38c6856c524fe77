"""The rules for metric values: typed writes, increments, current values, history.
Raises domain errors; never commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from customer_metrics import clock
from customer_metrics.customers.service import CustomerService
from customer_metrics.errors import Conflict, InvalidRequest, NotFound
from customer_metrics.limits import Limits, check_length
from customer_metrics.metrics.repository import MetricRow
from customer_metrics.metrics.service import MetricService
from customer_metrics.text import normalize_label
from customer_metrics.values import typed
from customer_metrics.values.repository import CurrentRow, StoredObservation, ValueRepository
from customer_metrics.values.schemas import ValueWrite

SOURCE_MAX = 100
NUMERIC_TYPES = frozenset({"NUMBER", "INTEGER"})


@dataclass(frozen=True, slots=True)
class Recorded:
    customer_id: str
    metric: MetricRow
    observation: StoredObservation


class ValueService:
    def __init__(
        self,
        repository: ValueRepository,
        metrics: MetricService,
        customers: CustomerService,
        limits: Limits,
    ) -> None:
        self._repo = repository
        self._metrics = metrics
        self._customers = customers
        self._limits = limits

    async def write(
        self, customer_id: str, ref: str, body: ValueWrite, create_customer: bool
    ) -> Recorded:
        metric = await self._metrics.get(ref)
        if metric.archived:
            raise Conflict(
                f"Metric {ref!r} is archived and takes no new values; restore it with "
                'PATCH {"archived": false} first.',
                "metric_archived",
            )
        sent = body.model_fields_set
        if body.source is not None:
            check_length(("body", "source"), body.source, SOURCE_MAX)
        now = clock.now()
        if "increment" in sent:
            return await self._increment(customer_id, metric, body, sent, now, create_customer)
        if "value" not in sent or body.value is None:
            raise InvalidRequest(
                ("body", "value"), "Field required (value or increment)", "missing"
            )
        value = typed.parse_value(
            metric.data_type,
            body.value,
            ("body", "value"),
            metric.allowed_values,
            self._limits.string_value,
        )
        observed_at = now
        if body.observed_at is not None:
            observed_at = typed.parse_timestamp(body.observed_at, ("body", "observed_at"))
            typed.check_observed_at(observed_at, now, ("body", "observed_at"))
        customer_ref = await self._customers.ref_for_write(customer_id, create_customer)
        observation = StoredObservation(observed_at, now, body.source, value.columns())
        await self._repo.record(customer_ref, metric.id, observation)
        return Recorded(normalize_label(customer_id), metric, observation)

    async def _increment(
        self,
        customer_id: str,
        metric: MetricRow,
        body: ValueWrite,
        sent: set[str],
        now: datetime,
        create_customer: bool,
    ) -> Recorded:
        loc: tuple[str | int, ...] = ("body", "increment")
        for forbidden in ("value", "observed_at"):
            if forbidden in sent:
                raise InvalidRequest(
                    ("body", forbidden),
                    f"{forbidden} cannot be sent with increment (an increment is observed now)",
                    "extra_forbidden",
                )
        if metric.data_type not in NUMERIC_TYPES:
            raise InvalidRequest(
                loc, "increment applies only to NUMBER and INTEGER metrics", "value_error"
            )
        typed.add(metric.data_type, None, body.increment, loc)  # validates before any write
        customer_ref = await self._customers.ref_for_write(customer_id, create_customer)
        column = typed.COLUMN_OF[metric.data_type]
        current = await self._repo.current_for_update(customer_ref, metric.id)
        if current is None:
            first = typed.add(metric.data_type, None, body.increment, loc)
            observation = StoredObservation(now, now, body.source, first.columns())
            if await self._repo.claim_current(customer_ref, metric.id, observation):
                await self._repo.record(customer_ref, metric.id, observation)
                return Recorded(normalize_label(customer_id), metric, observation)
            current = await self._repo.current_for_update(customer_ref, metric.id)
            assert current is not None
        total = typed.add(metric.data_type, current.values[column], body.increment, loc)
        # A current value observed (up to 5 minutes) in the future stays the latest: the
        # increment lands on that instant rather than behind it.
        observed_at = max(now, current.observed_at)
        observation = StoredObservation(observed_at, now, body.source, total.columns())
        await self._repo.record(customer_ref, metric.id, observation)
        return Recorded(normalize_label(customer_id), metric, observation)

    async def current(self, customer_id: str, as_of: datetime | None) -> list[CurrentRow]:
        if as_of is None:
            rows = await self._repo.current_view(normalize_label(customer_id))
            if rows is None:
                raise NotFound(f"No customer {customer_id!r} in this organization.")
            return rows
        customer = await self._customers.get(customer_id)
        return await self._repo.as_of_view(customer.id, as_of)

    async def history(
        self,
        customer_id: str,
        ref: str,
        start: datetime | None,
        end: datetime | None,
        before: datetime | None,
        limit: int,
    ) -> tuple[MetricRow, list[StoredObservation]]:
        metric = await self._metrics.get(ref)
        customer = await self._customers.get(customer_id)
        rows = await self._repo.history(customer.id, metric.id, start, end, before, limit)
        return metric, rows

    async def delete(
        self, customer_id: str, ref: str, start: datetime | None, end: datetime | None
    ) -> int:
        metric = await self._metrics.get(ref)
        customer = await self._customers.get(customer_id)
        return await self._repo.delete_range(customer.id, metric.id, start, end)
