"""An HTTP client for the API: a running server (`--url`, `--api-key`), or the local database
through the same application in-process, acting for one organization (`--org`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Request

from customer_metrics.api.deps import DbSession, current_tenant, enter_tenant
from customer_metrics.main import create_app
from customer_metrics.organizations.repository import OrganizationRepository
from customer_metrics.settings import Settings
from customer_metrics.storage import migrate as migrations
from customer_metrics.storage.database import Database, open_session
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
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        database: Database = app.state.database
        if not await migrations.is_up_to_date(database, settings.resolved_database_url):
            raise ValueError("the local database is not migrated: run `customer-metrics migrate`")
        organization = await _local_organization(database, organization_id)
        tenant = Tenant(organization_id=organization, api_key_id=0)

        async def local_tenant(request: Request, session: DbSession) -> Tenant:
            await enter_tenant(request, session, tenant)  # stands in for the key lookup only
            return tenant

        app.dependency_overrides[current_tenant] = local_tenant
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://local" + API, timeout=TIMEOUT
        ) as client:
            yield client


async def _local_organization(database: Database, organization_id: int | None) -> int:
    """The organization the local database is used for: `--org`, which must exist, or the
    database's only organization when none is given."""
    session = await open_session(database, read_only=True)
    try:
        organizations = OrganizationRepository(session)
        if organization_id is not None:
            if not await organizations.exists(organization_id):
                raise ValueError(f"no organization {organization_id} in the local database")
            return organization_id
        found = await organizations.list_all_unscoped()
    finally:
        await session.close()
    if len(found) == 1:
        return found[0].id
    if not found:
        raise ValueError(
            "the local database has no organization: create one with "
            "`customer-metrics org create NAME`"
        )
    raise ValueError(
        f"the local database has {len(found)} organizations: give --org ID "
        "(or --url and --api-key for a server)"
    )
