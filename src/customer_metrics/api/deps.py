"""Request dependencies: the request's database session and the tenant its API key names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from customer_metrics.api_keys.repository import ApiKeyRepository
from customer_metrics.api_keys.service import ApiKeyService
from customer_metrics.limits import Limits
from customer_metrics.storage.database import Session, open_session
from customer_metrics.tenancy import Tenant

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def db_session(request: Request) -> AsyncIterator[Session]:
    # Only releases the connection: routes commit before returning (code after `yield` runs
    # once the response has been sent), and closing an uncommitted session rolls it back.
    session = await open_session(
        request.app.state.database,
        read_only=request.method in _READ_METHODS,
        lazy_transaction=True,
    )
    try:
        yield session
    finally:
        await session.close()


DbSession = Annotated[Session, Depends(db_session)]


def _presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("x-api-key")


async def current_tenant(request: Request, session: DbSession) -> Tenant:
    service = ApiKeyService(ApiKeyRepository(session), request.app.state.secret)
    tenant = await service.authenticate(_presented_key(request))
    request.state.tenant = tenant
    if request.method not in _READ_METHODS:
        await session.begin_transaction()  # the key lookup ran outside it
    return tenant


CurrentTenant = Annotated[Tenant, Depends(current_tenant)]


# Every dependency here and in the routers is `async def`: FastAPI runs a plain `def` in a
# worker thread, a hop that costs more than the work these do.
async def limits(request: Request) -> Limits:
    return request.app.state.limits  # type: ignore[no-any-return]


AppLimits = Annotated[Limits, Depends(limits)]
