"""Unauthenticated operational routes: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from customer_metrics.api.errors import error_body
from customer_metrics.api.openapi import ErrorOut
from customer_metrics.storage.migrate import is_up_to_date

router = APIRouter(tags=["operations"])
log = logging.getLogger("customer_metrics.health")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"model": ErrorOut, "description": "Database unreachable or not migrated"}},
)
async def readyz(request: Request) -> Response:
    state = request.app.state
    try:
        ready = await is_up_to_date(state.database, state.settings.resolved_database_url)
    except Exception:  # any failure to reach the database means "not ready"
        log.warning("readiness check could not reach the database", exc_info=True)
        ready = False
    if not ready:
        body = error_body("Database unreachable or not migrated.", "unavailable")
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
