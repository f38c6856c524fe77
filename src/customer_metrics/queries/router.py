"""HTTP routes for queries across customers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from customer_metrics.api.deps import AppLimits, CurrentTenant, DbSession
from customer_metrics.api.pagination import decode_cursor, encode_cursor
from customer_metrics.api.responses import ExactJSONResponse
from customer_metrics.api.routing import WRITE_DEPENDENCIES, StrictRoute
from customer_metrics.metrics.repository import MetricRepository
from customer_metrics.queries.repository import SearchRepository
from customer_metrics.queries.schemas import SearchRequest, SearchResult
from customer_metrics.queries.service import SearchService

router = APIRouter(
    prefix="/customers",
    tags=["queries"],
    route_class=StrictRoute,
    dependencies=WRITE_DEPENDENCIES,
)


def search_service(session: DbSession, tenant: CurrentTenant, limits: AppLimits) -> SearchService:
    return SearchService(
        SearchRepository(session, tenant), MetricRepository(session, tenant), limits
    )


@router.post("/search", response_model=SearchResult, response_class=ExactJSONResponse)
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
