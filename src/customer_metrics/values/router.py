"""HTTP routes for metric values under `/customers/{customer_id}/metrics`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from customer_metrics.api.deps import (
    RECHECK_STATE,
    AppLimits,
    CurrentTenant,
    DbSession,
    checks_key_inline,
    db_session,
    reuses_lookups,
    session_and_tenant,
    writes_after_checks,
)
from customer_metrics.api.hot import hot
from customer_metrics.api.openapi import CUSTOMER_REF, METRIC_REF, errors, links
from customer_metrics.api.pagination import Cursor, Limit, decode_cursor, encode_cursor
from customer_metrics.api.params import FromQuery, TimeQuery, ToQuery
from customer_metrics.api.responses import ExactJSONResponse, RawJSONResponse
from customer_metrics.api.routing import StrictRoute
from customer_metrics.clock import format_timestamp
from customer_metrics.customers.repository import CustomerRepository
from customer_metrics.customers.router import CustomerIdPath
from customer_metrics.customers.service import CustomerService
from customer_metrics.errors import InvalidRequest
from customer_metrics.limits import Limits
from customer_metrics.metrics.refs import format_metric_id
from customer_metrics.metrics.repository import MetricRepository, MetricRow
from customer_metrics.metrics.service import MetricService
from customer_metrics.text import normalize_label
from customer_metrics.values import typed
from customer_metrics.values.batch import BatchOutcome, BatchRejected, BatchService
from customer_metrics.values.repository import RenderedView, StoredObservation, ValueRepository
from customer_metrics.values.schemas import (
    BatchResult,
    BatchWrite,
    CurrentValues,
    Deleted,
    ObservationOut,
    ObservationPage,
    ValueWrite,
)
from customer_metrics.values.service import ValueService

router = APIRouter(
    prefix="/customers",
    tags=["metric values"],
    route_class=StrictRoute,
)
batch_router = APIRouter(
    tags=["metric values"],
    route_class=StrictRoute,
)


async def value_service(request: Request) -> ValueService:
    session, tenant = await session_and_tenant(request)
    limits: Limits = request.app.state.limits  # not a dependency: each costs every request
    values = ValueRepository(session, tenant)
    rerun = bool(request.state._state.get(RECHECK_STATE))
    remembers = reuses_lookups(request) or (rerun and not request.app.state.database.is_sqlite)
    known = request.app.state.known_metrics if remembers else None
    metrics = MetricService(MetricRepository(session, tenant), values, limits, known)
    customers = CustomerService(CustomerRepository(session, tenant), limits)
    return ValueService(values, metrics, customers, limits, refresh=rerun)


Service = Annotated[ValueService, Depends(value_service)]


def _time(raw: str | None, name: str) -> datetime | None:
    return None if raw is None else typed.parse_timestamp(raw, ("query", name))


def observation_out(
    customer_id: str, metric: MetricRow, obs: StoredObservation
) -> dict[str, object]:
    column = typed.COLUMN_OF[metric.data_type]
    return {
        "customer_id": customer_id,
        "metric_id": format_metric_id(metric.id),
        "key": metric.key,
        "value": typed.to_json(metric.data_type, obs.values[column]),
        "observed_at": format_timestamp(obs.observed_at),
        "recorded_at": format_timestamp(obs.recorded_at),
        "source": obs.source,
    }


@router.post(
    "/{customer_id}/metrics/{ref}/values",
    status_code=status.HTTP_201_CREATED,
    response_model=ObservationOut,
    response_class=ExactJSONResponse,
    responses={
        **links(201, {**CUSTOMER_REF, **METRIC_REF}, "list_values", "delete_values"),
        **errors(404, 409, 415),
    },
)
@checks_key_inline
@hot
async def record_value(
    customer_id: CustomerIdPath,
    ref: str,
    body: ValueWrite,
    service: Service,
    request: Request,
    create_customer: bool = True,
) -> ExactJSONResponse:
    recorded = await service.write(customer_id, ref, body, create_customer)
    await (await db_session(request)).commit()  # the service's session (no second dependency)
    request.app.state.metrics.ingested_single.inc()
    return ExactJSONResponse(
        observation_out(recorded.customer_id, recorded.metric, recorded.observation),
        status_code=status.HTTP_201_CREATED,
    )


@router.get(
    "/{customer_id}/metrics",
    response_model=CurrentValues,
    response_class=ExactJSONResponse,
    responses=errors(404),
)
@checks_key_inline
@hot
async def get_current_values(
    customer_id: CustomerIdPath, service: Service, as_of: TimeQuery = None
) -> Response:
    rows = await service.current(customer_id, _time(as_of, "as_of"))
    if isinstance(rows, RenderedView):
        return RawJSONResponse(b'{"data":' + rows.json_array.encode() + b"}")
    data = [
        {
            "metric_id": format_metric_id(r.metric_ref),
            "key": r.key,
            "name": r.name,
            "data_type": r.data_type,
            "unit": r.unit,
            "value": typed.to_json(r.data_type, r.value),
            "observed_at": format_timestamp(r.observed_at),
        }
        for r in rows
    ]
    return ExactJSONResponse({"data": data})


@router.get(
    "/{customer_id}/metrics/{ref}/values",
    response_model=ObservationPage,
    response_class=ExactJSONResponse,
    responses=errors(404),
)
async def list_values(
    customer_id: CustomerIdPath,
    ref: str,
    service: Service,
    start: FromQuery = None,
    end: ToQuery = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ExactJSONResponse:
    position = decode_cursor(cursor, None)
    before = None if position is None else _cursor_time(position)
    metric, rows = await service.history(
        customer_id, ref, _time(start, "from"), _time(end, "to"), before, limit + 1
    )
    next_cursor = (
        encode_cursor(format_timestamp(rows[limit - 1].observed_at)) if len(rows) > limit else None
    )
    data = [observation_out(normalize_label(customer_id), metric, r) for r in rows[:limit]]
    return ExactJSONResponse({"data": data, "next_cursor": next_cursor})


def _cursor_time(position: object) -> datetime:
    try:
        return typed.parse_timestamp(position, ("query", "cursor"))
    except InvalidRequest:
        raise InvalidRequest(
            ("query", "cursor"), "Cursor is not one this API issued", "cursor_invalid"
        ) from None


@router.delete(
    "/{customer_id}/metrics/{ref}/values",
    response_model=Deleted,
    responses=errors(404, 409),
)
async def delete_values(
    customer_id: CustomerIdPath,
    ref: str,
    service: Service,
    session: DbSession,
    start: FromQuery = None,
    end: ToQuery = None,
) -> Deleted:
    deleted = await service.delete(customer_id, ref, _time(start, "from"), _time(end, "to"))
    await session.commit()
    return Deleted(deleted=deleted)


async def batch_service(
    session: DbSession, tenant: CurrentTenant, limits: AppLimits
) -> BatchService:
    values = ValueRepository(session, tenant)
    metrics = MetricRepository(session, tenant)
    customers = CustomerRepository(session, tenant)
    customer_rules = CustomerService(customers, limits)
    single = ValueService(values, MetricService(metrics, values, limits), customer_rules, limits)
    return BatchService(single, values, metrics, customers, customer_rules, limits)


def _batch_body(outcome: BatchOutcome) -> dict[str, object]:
    return {
        "accepted": outcome.accepted,
        "rejected": len(outcome.errors),
        "errors": [{"index": i, "detail": d} for i, d in sorted(outcome.errors.items())],
    }


@batch_router.post(
    "/customers/metrics/values",
    response_model=BatchResult,
    responses={
        422: {"description": "Atomic batch with a bad item, or a malformed body"},
        **errors(409, 415),
    },
)
@writes_after_checks
@hot
async def write_values_batch(
    body: BatchWrite,
    service: Annotated[BatchService, Depends(batch_service)],
    session: DbSession,
    request: Request,
) -> ExactJSONResponse:
    try:
        checked = await service.check(body.values, body.atomic, body.create_customers)
        await session.begin_transaction()
        outcome = await service.store(checked)
    except BatchRejected as rejected:
        # Nothing was stored: FastAPI's 422 shape, plus the same per-item report.
        errors = sorted(rejected.outcome.errors.items())
        detail = [item for _, items in errors for item in items]
        answer = {**_batch_body(rejected.outcome), "accepted": 0}
        return ExactJSONResponse({"detail": detail, **answer}, status_code=422)
    await session.commit()
    request.app.state.metrics.ingested.labels("batch").inc(outcome.accepted)
    return ExactJSONResponse(_batch_body(outcome))
