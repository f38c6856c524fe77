"""create_app(settings): the lifespan opens the database; routers and error handlers mount."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.types import ASGIApp

from customer_metrics import __version__
from customer_metrics.api import errors, health
from customer_metrics.api.hot import HotRoutes
from customer_metrics.api.middleware import (
    API_PREFIX,
    DOUBLED_PREFIX,
    EdgeMiddleware,
)
from customer_metrics.api.observability import Metrics, configure_logging
from customer_metrics.api.openapi import EVERY_API_ROUTE, declare_security, operation_id
from customer_metrics.api.ratelimit import build_rate_limiter
from customer_metrics.api.resources import Resources
from customer_metrics.api_keys.secrets import load_or_create_secret
from customer_metrics.api_keys.service import KnownKeys
from customer_metrics.customers.router import router as customers_router
from customer_metrics.idempotency.purge import purge_forever
from customer_metrics.limits import Limits
from customer_metrics.metrics.router import router as metrics_router
from customer_metrics.metrics.service import KnownMetrics
from customer_metrics.queries.fold import fold_forever
from customer_metrics.queries.router import router as queries_router
from customer_metrics.settings import Settings, get_settings
from customer_metrics.storage.database import Database
from customer_metrics.values.router import batch_router
from customer_metrics.values.router import router as values_router

# Order matters: `/customers/metrics…` must match before `/customers/{customer_id}…`.
FEATURE_ROUTERS = [batch_router, metrics_router, values_router, queries_router, customers_router]


def settle_garbage_collector() -> None:
    """Objects alive after start-up live as long as the process: freeze them out of the
    collector's sight, and collect the young generation less often. Under load the default
    thresholds ran a full collection every second or two (85-150 ms pauses, most of the p99
    tail)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


class ServiceApp(FastAPI):
    """FastAPI, with the edge middleware (`api/middleware.py`) outside its whole stack, and
    the hot routes (`api/hot.py`) matched just inside the edge: a hot request skips every
    layer of FastAPI's stack (each costs a coroutine and a wrapped `send` a request). An
    error nothing handled is answered by FastAPI's ServerErrorMiddleware with the edge's
    own last-resort answer (`errors.install`), then logged by the edge."""

    edge: Callable[[ASGIApp], ASGIApp]
    hot_routes: Callable[[ASGIApp], ASGIApp]

    def build_middleware_stack(self) -> ASGIApp:
        return self.edge(self.hot_routes(super().build_middleware_stack()))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings.resolved_database_url, settings.pool_size)
        app.state.database = database
        settle_garbage_collector()
        purger = asyncio.create_task(
            purge_forever(database, settings.idempotency_purge_interval_seconds)
        )
        folder = asyncio.create_task(fold_forever(database, settings.rollup_fold_interval_seconds))
        try:
            yield
        finally:
            folder.cancel()
            purger.cancel()
            await database.dispose()

    app = ServiceApp(
        title="Customer Metrics API",
        version=__version__,
        lifespan=lifespan,
        # Our own Prometheus metrics and request ids cover this; FastAPI's OpenTelemetry hooks
        # look the environment up on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.limits = Limits.from_settings(settings)
    app.state.metrics = metrics
    app.state.secret = load_or_create_secret(settings.secret_key, settings.data_dir)
    app.state.rate_limiter = build_rate_limiter(settings, app.state.secret)
    app.state.known_keys = KnownKeys()
    app.state.known_metrics = KnownMetrics()
    mounted = (
        [("", health.router)]
        + [(API_PREFIX, feature) for feature in FEATURE_ROUTERS]
        + [(DOUBLED_PREFIX, feature) for feature in FEATURE_ROUTERS]
    )
    app.state.resources = Resources(mounted)
    errors.install(app)
    app.include_router(health.router)
    # Each feature straight into the app (not through a router of routers): every level of
    # inclusion is walked again to match every request.
    for feature in FEATURE_ROUTERS:
        app.include_router(feature, prefix=API_PREFIX, responses=EVERY_API_ROUTE)
    # The seed page shows the path doubled; answer there too, outside the OpenAPI document.
    for feature in FEATURE_ROUTERS:
        app.include_router(
            feature, prefix=DOUBLED_PREFIX, responses=EVERY_API_ROUTE, include_in_schema=False
        )
    declare_security(app, API_PREFIX)
    # In the order included above, which is the router's order of trying routes.
    app.edge = partial(
        EdgeMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        max_in_flight=settings.max_requests_in_flight,
    )
    app.hot_routes = partial(HotRoutes, router=app.router, mounted=mounted)
    return app
