"""An HTTP client for the API: a running server (`--url`, `--api-key`), or the local database
through the same application in-process, acting for one organization (`--org`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Request

from customer_metrics.api.deps import DbSession, current_tenant, enter_tenant
from customer_metrics.main import create_app
from customer_metrics.settings import Settings
from customer_metrics.tenancy import Tenant

API = "/external/v1"
TIMEOUT = httpx.Timeout(120.0, connect=10.0)


@asynccontextmanager
async def api_client(
    url: str | None, api_key: str | None, organization_id: int | None, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    if url or api_key:
        if not (url and api_key):
            raise ValueError("--url and --api-key go together")
        headers = {"Authorization": f"Bearer {api_key}"}
        async with httpx.AsyncClient(
            base_url=url.rstrip("/") + API, headers=headers, timeout=TIMEOUT
        ) as client:
            yield client
        return
    if organization_id is None:
        raise ValueError("give --org ID for the local database, or --url and --api-key")
    app = create_app(settings)
    tenant = Tenant(organization_id=organization_id, api_key_id=0)

    async def local_tenant(request: Request, session: DbSession) -> Tenant:
        await enter_tenant(request, session, tenant)  # stands in for the key lookup only
        return tenant

    app.dependency_overrides[current_tenant] = local_tenant
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://local" + API, timeout=TIMEOUT
        ) as client:
            yield client
