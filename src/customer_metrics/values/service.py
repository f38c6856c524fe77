"""The rules for metric values: typed writes, increments, current values, history.
Raises domain errors; never commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from customer_metrics import clock
from customer_metrics.customers.service import CustomerService
from customer_metrics.errors import AppError, NotFound, StaleLookup
from customer_metrics.limits import Limits
from customer_metrics.metrics.repository import MetricRow
from customer_metrics.metrics.service import MetricService
from customer_metrics.text import is_clean, normalize_label
from customer_metrics.values import typed
from customer_metrics.values.prepare import Loc, PreparedWrite, archived_error, prepare_write
from customer_metrics.values.repository import (
    CurrentRow,
    RenderedView,
    StoredObservation,
    ValueRepository,
)
from customer_metrics.values.schemas import ValueWrite

ONE_MILLISECOND = timedelta(milliseconds=1)


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
        refresh: bool = False,
    ) -> None:
        self._repo = repository
        self._metrics = metrics
        self._customers = customers
        self._limits = limits
        self._refresh = refresh  # run again after a stale lookup: read definitions afresh

    async def write(
        self, customer_id: str, ref: str, body: ValueWrite, create_customer: bool
    ) -> Recorded:
        metric, remembered = await self._metrics.get_for_write(ref, self._refresh)
        try:
            if metric.archived:
                raise archived_error(ref)
            fields = {name: getattr(body, name) for name in body.model_fields_set}
            prepared = prepare_write(
                metric, fields, body.model_fields_set, clock.now(), self._limits, ("body",)
            )
            customer_id = self._customers.check_customer_id(customer_id, ("path", "customer_id"))
        except AppError:
            if remembered:  # the definition may have changed since: answer from a fresh one
                raise StaleLookup() from None
            raise
        if prepared.value is not None:
            # The common case, an existing customer: found and written in one statement, which
            # checks a remembered key and definition itself.
            observation = StoredObservation(
                prepared.observed_at, clock.now(), prepared.source, prepared.value.columns()
            )
            if await self._repo.record_for_customer_id(
                customer_id, metric, observation, remembered
            ):
                return Recorded(customer_id, metric, observation)
        elif remembered or not self._repo.key_checked:
            # Increments run several statements that check nothing remembered.
            raise StaleLookup()
        customer_ref = await self._customers.ref_for_write(customer_id, create_customer)
        observation = await self.apply(customer_ref, metric, prepared, ("body", "increment"))
        return Recorded(customer_id, metric, observation)

    async def apply(
        self, customer_ref: int, metric: MetricRow, prepared: PreparedWrite, loc: Loc
    ) -> StoredObservation:
        """Stores a checked write; an increment reads and adds under the current-value lock."""
        if prepared.value is not None:
            observation = StoredObservation(
                prepared.observed_at, clock.now(), prepared.source, prepared.value.columns()
            )
            await self._repo.record(customer_ref, metric.id, observation)
            return observation
        column = typed.COLUMN_OF[metric.data_type]
        current = await self._repo.current_for_update(customer_ref, metric.id)
        now = clock.now()  # read once the lock is held: the time the increment happens
        if current is None:
            first = typed.add(metric.data_type, None, prepared.increment, loc)
            observation = StoredObservation(now, now, prepared.source, first.columns())
            if await self._repo.claim_current(customer_ref, metric.id, observation):
                await self._repo.record(customer_ref, metric.id, observation)
                return observation
            current = await self._repo.current_for_update(customer_ref, metric.id)
            assert current is not None
            now = clock.now()
        total = typed.add(metric.data_type, current.values[column], prepared.increment, loc)
        # Every increment is its own observation, after the one it adds to: at least 1 ms
        # later (two increments in one millisecond must not replace each other), and after a
        # current value observed up to 5 minutes in the future.
        observed_at = max(now, current.observed_at + ONE_MILLISECOND)
        observation = StoredObservation(observed_at, now, prepared.source, total.columns())
        await self._repo.record(customer_ref, metric.id, observation)
        return observation

    async def current(
        self, customer_id: str, as_of: datetime | None
    ) -> list[CurrentRow] | RenderedView:
        if as_of is None:
            if not is_clean(customer_id):
                raise NotFound(f"No customer {customer_id!r} in this organization.")
            rows = await self._repo.current_view(normalize_label(customer_id))
            if rows is None:
                raise NotFound(f"No customer {customer_id!r} in this organization.")
            return rows
        if not self._repo.key_checked:  # these statements check no remembered key
            raise StaleLookup()
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
