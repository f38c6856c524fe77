"""HTTP routes for metric definitions (`/customers/metrics`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from customer_metrics.api.deps import (
    DbSession,
    checks_key_inline,
    db_session,
    session_and_tenant,
)
from customer_metrics.api.hot import hot
from customer_metrics.api.openapi import METRIC_REF, errors, links
from customer_metrics.api.pagination import Cursor, Limit, decode_int_cursor, encode_cursor
from customer_metrics.api.responses import ExactJSONResponse
from customer_metrics.api.routing import StrictRoute
from customer_metrics.clock import format_timestamp
from customer_metrics.metrics.refs import format_metric_id
from customer_metrics.metrics.repository import MetricFilter, MetricRepository, MetricRow
from customer_metrics.metrics.schemas import (
    DataType,
    MetricCreate,
    MetricDetailOut,
    MetricOut,
    MetricPage,
    MetricUpdate,
    MetricUsage,
)
from customer_metrics.metrics.service import MetricService
from customer_metrics.text import CleanStr, comparison_key
from customer_metrics.values.repository import ValueRepository

router = APIRouter(
    prefix="/customers/metrics",
    tags=["metric definitions"],
    route_class=StrictRoute,
)


async def metric_service(request: Request) -> MetricService:
    session, tenant = await session_and_tenant(request)
    # (Limits straight from the app: each dependency FastAPI resolves costs every request.)
    return MetricService(
        MetricRepository(session, tenant),
        ValueRepository(session, tenant),
        request.app.state.limits,
    )


Service = Annotated[MetricService, Depends(metric_service)]


def to_out(row: MetricRow) -> MetricOut:
    return MetricOut(**_fields(row))


def _fields(row: MetricRow) -> dict[str, object]:
    return dict(
        id=row.id,
        metric_id=format_metric_id(row.id),
        name=row.name,
        description=row.description,
        data_type=row.data_type,
        organization_id=row.organization_id,
        time_created=row.time_created,
        time_updated=row.time_updated,
        key=row.key,
        unit=row.unit,
        allowed_values=row.allowed_values,
        archived=row.archived,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=MetricOut,
    responses={
        **links(
            201,
            METRIC_REF,
            "get_metric",
            "update_metric",
            "delete_metric",
            "record_value",
            "list_values",
            "delete_values",
            "summarize_metric",
            "metric_series",
        ),
        **errors(409, 415),
    },
)
@checks_key_inline
@hot
async def create_metric(body: MetricCreate, service: Service, request: Request) -> Response:
    row = await service.create(body)
    await (await db_session(request)).commit()  # the service's session (no second dependency)
    # Rendered here rather than through `response_model` (which validates the answer all
    # over again): the hottest write of the API. tests/api/test_seed.py holds it to MetricOut.
    fields = _fields(row)
    fields["time_created"] = fields["time_updated"] = format_timestamp(row.time_created)
    if row.time_updated != row.time_created:  # one clock reading for both, at a create
        fields["time_updated"] = format_timestamp(row.time_updated)
    location = f"/external/v1/customers/metrics/{fields['metric_id']}"
    return ExactJSONResponse(
        fields, status_code=status.HTTP_201_CREATED, headers={"Location": location}
    )


@router.get("", response_model=MetricPage)
async def list_metrics(
    service: Service,
    limit: Limit = 50,
    cursor: Cursor = None,
    include_archived: bool = False,
    data_type: Annotated[DataType | None, Query()] = None,
    q: Annotated[CleanStr | None, Query(max_length=200)] = None,
) -> MetricPage:
    after = decode_int_cursor(cursor)
    where = MetricFilter(
        include_archived=include_archived,
        data_type=data_type,
        folded_query=comparison_key(q.strip()) if q and q.strip() else None,
    )
    rows = await service.list_page(where, after, limit + 1)
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return MetricPage(data=[to_out(r) for r in rows[:limit]], next_cursor=next_cursor)


@router.get("/{ref}", response_model=MetricDetailOut, responses=errors(404))
async def get_metric(ref: str, service: Service) -> MetricDetailOut:
    row = await service.get(ref)
    usage = await service.usage(row)
    return MetricDetailOut(
        **_fields(row),
        usage=MetricUsage(
            customers=usage.customers, values=usage.values, last_value_at=usage.last_value_at
        ),
    )


@router.patch("/{ref}", response_model=MetricOut, responses=errors(404, 409, 415))
async def update_metric(
    ref: str, body: MetricUpdate, service: Service, session: DbSession
) -> MetricOut:
    row = await service.update(ref, body)
    await session.commit()
    return to_out(row)


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404, 409))
async def delete_metric(
    ref: str, service: Service, session: DbSession, cascade: bool = False
) -> Response:
    await service.delete(ref, cascade)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
