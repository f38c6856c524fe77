"""HTTP routes for queries across customers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from customer_metrics import clock
from customer_metrics.api.deps import AppLimits, CurrentTenant, DbSession, reads_only
from customer_metrics.api.openapi import errors
from customer_metrics.api.pagination import decode_cursor, encode_cursor
from customer_metrics.api.params import TIME, TimeQuery
from customer_metrics.api.responses import ExactJSONResponse
from customer_metrics.api.routing import StrictRoute
from customer_metrics.clock import format_timestamp
from customer_metrics.customers.repository import CustomerRepository
from customer_metrics.customers.service import CustomerService
from customer_metrics.metrics.refs import format_metric_id
from customer_metrics.metrics.repository import MetricRepository
from customer_metrics.metrics.service import MetricService
from customer_metrics.queries.repository import SearchRepository
from customer_metrics.queries.rollup_repository import RollupRepository
from customer_metrics.queries.schemas import SearchRequest, SearchResult, SeriesOut, SummaryOut
from customer_metrics.queries.series import SeriesService
from customer_metrics.queries.series_repository import SeriesRepository
from customer_metrics.queries.service import SearchService
from customer_metrics.queries.summary import SummaryService
from customer_metrics.queries.summary_repository import SummaryRepository
from customer_metrics.values import typed
from customer_metrics.values.repository import ValueRepository

router = APIRouter(
    prefix="/customers",
    tags=["queries"],
    route_class=StrictRoute,
)


async def search_service(
    session: DbSession, tenant: CurrentTenant, limits: AppLimits
) -> SearchService:
    return SearchService(
        SearchRepository(session, tenant), MetricRepository(session, tenant), limits
    )


@router.post(
    "/search", response_model=SearchResult, response_class=ExactJSONResponse, responses=errors(415)
)
@reads_only
async def search_customers(
    body: SearchRequest, service: Annotated[SearchService, Depends(search_service)]
) -> ExactJSONResponse:
    cursor = decode_cursor(body.cursor, None) if body.cursor else None
    page = await service.search(body, cursor)
    answer: dict[str, Any] = {
        "data": [
            {"customer_id": f.customer_id, "name": f.name, "email": f.email, "metrics": f.metrics}
            for f in page.data
        ],
        "next_cursor": encode_cursor(page.next_cursor) if page.next_cursor is not None else None,
    }
    if page.count is not None:
        answer["count"] = page.count
    return ExactJSONResponse(answer)


async def summary_service(session: DbSession, tenant: CurrentTenant) -> SummaryService:
    return SummaryService(SummaryRepository(session, tenant), RollupRepository(session, tenant))


async def metric_lookup(
    session: DbSession, tenant: CurrentTenant, limits: AppLimits
) -> MetricService:
    return MetricService(
        MetricRepository(session, tenant), ValueRepository(session, tenant), limits
    )


Metrics = Annotated[MetricService, Depends(metric_lookup)]


@router.get(
    "/metrics/{ref}/summary",
    response_model=SummaryOut,
    response_class=ExactJSONResponse,
    responses=errors(404),
)
async def summarize_metric(
    ref: str,
    metrics: Metrics,
    service: Annotated[SummaryService, Depends(summary_service)],
    as_of: TimeQuery = None,
) -> ExactJSONResponse:
    """Across customers' current values (or their values as of `as_of`)."""
    metric = await metrics.get(ref)
    instant = typed.parse_timestamp(as_of, ("query", "as_of")) if as_of is not None else None
    summary = await service.summarize(metric, instant)
    return ExactJSONResponse(
        {
            "metric_id": format_metric_id(metric.id),
            "data_type": metric.data_type,
            "as_of": format_timestamp(instant or clock.now()),
            "count": summary.count,
            **summary.fields,
        }
    )


@router.get(
    "/metrics/{ref}/series",
    response_model=SeriesOut,
    response_class=ExactJSONResponse,
    responses=errors(404),
)
async def metric_series(
    ref: str,
    metrics: Metrics,
    customers: Annotated[CustomerService, Depends(customer_lookup)],
    service: Annotated[SeriesService, Depends(series_service)],
    start: Annotated[str, Query(alias="from", **TIME)],
    end: Annotated[str, Query(alias="to", **TIME)],
    interval: Literal["hour", "day", "week", "month"] = "day",
    tz: Annotated[str, Query(max_length=64, description="IANA time zone.")] = "UTC",
    agg: Literal[
        "sum", "avg", "min", "max", "count", "snapshot_sum", "snapshot_avg", "snapshot_count"
    ] = "count",
    customer_id: Annotated[str | None, Query(max_length=1024)] = None,
) -> ExactJSONResponse:
    """Buckets over [from, to) in `tz`, one entry per bucket, empty ones included."""
    metric = await metrics.get(ref)
    first = typed.parse_timestamp(start, ("query", "from"))
    last = typed.parse_timestamp(end, ("query", "to"))
    customer_ref = (await customers.get(customer_id)).id if customer_id is not None else None
    points = await service.series(metric, first, last, interval, tz, agg, customer_ref)
    # Buckets are contiguous (each ends where the next starts): each bound is formatted once.
    bounds = [format_timestamp(p.bucket.start) for p in points]
    bounds.append(format_timestamp(points[-1].bucket.end))
    return ExactJSONResponse(
        {
            "metric_id": format_metric_id(metric.id),
            "interval": interval,
            "tz": tz,
            "agg": agg,
            "data": [
                {
                    "start": bounds[i],
                    "end": bounds[i + 1],
                    "value": typed.to_json(metric.data_type, p.value)
                    if agg not in ("count", "snapshot_count")
                    else p.value,
                    "count": p.count,
                }
                for i, p in enumerate(points)
            ],
        }
    )


async def series_service(session: DbSession, tenant: CurrentTenant) -> SeriesService:
    return SeriesService(SeriesRepository(session, tenant), RollupRepository(session, tenant))


async def customer_lookup(
    session: DbSession, tenant: CurrentTenant, limits: AppLimits
) -> CustomerService:
    return CustomerService(CustomerRepository(session, tenant), limits)
