"""Request dependencies: the request's database session and the tenant its API key names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar, cast

from fastapi import Depends, Request

from customer_metrics.api.idempotency import claim_key
from customer_metrics.api_keys.repository import ApiKeyRepository
from customer_metrics.api_keys.service import ApiKeyService
from customer_metrics.limits import Limits
from customer_metrics.storage.database import Session, open_session
from customer_metrics.tenancy import Tenant

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_STATE = "db_session"


F = TypeVar("F", bound=Callable[..., Any])


def reads_only(endpoint: F) -> F:
    """Marks a route that writes nothing although its method is not GET (POST /search), so it
    gets a read transaction: no write lock on SQLite, no transaction on PostgreSQL."""
    endpoint.reads_only = True  # type: ignore[attr-defined]
    return endpoint


def checks_key_inline(endpoint: F) -> F:
    """Marks a route whose statements check a remembered API key themselves (see KnownKeys):
    on PostgreSQL it skips the key lookup's round trip. Only its successful answers rely on
    that; an error answer is given only once a lookup confirms the key (api/routing.py)."""
    endpoint.checks_key_inline = True  # type: ignore[attr-defined]
    return endpoint


def writes_after_checks(endpoint: F) -> F:
    """Marks a write route that judges its body (reading only) before it writes: its write
    transaction begins when the route says (`Session.begin_transaction`), not once the key
    is known, so on SQLite the write lock is not held while it judges. A request with an
    Idempotency-Key still begins at once: its key is claimed before anything else."""
    endpoint.writes_after_checks = True  # type: ignore[attr-defined]
    return endpoint


def _begins_late(request: Request) -> bool:
    endpoint = getattr(request.scope.get("route"), "endpoint", None)
    return bool(getattr(endpoint, "writes_after_checks", False)) and (
        "idempotency-key" not in request.headers
    )


RECHECK_STATE = "recheck"
ADMITTED_STATE = "rate_limit_admitted"


def reuses_lookups(request: Request) -> bool:
    """Whether this request may use what the worker remembers (API keys, metric definitions)
    instead of looking it up: on PostgreSQL, on routes built for it, unless the request is
    being run again because something remembered did not hold."""
    state = request.state._state
    if state.get(RECHECK_STATE) or request.app.state.database.is_sqlite:
        return False
    endpoint = getattr(request.scope.get("route"), "endpoint", None)
    # An Idempotency-Key is claimed (a write) before the route's own statements run.
    return bool(getattr(endpoint, "checks_key_inline", False)) and (
        "idempotency-key" not in request.headers
    )


def is_read(request: Request) -> bool:
    if request.method in _READ_METHODS:
        return True
    endpoint = getattr(request.scope.get("route"), "endpoint", None)
    return bool(getattr(endpoint, "reads_only", False))


async def db_session(request: Request) -> Session:
    """The request's session, opened on first use. `StrictRoute` closes it once the endpoint
    has returned (routes commit before returning; closing an uncommitted session rolls it
    back), which costs far less per request than a generator dependency's exit stack."""
    state = request.state._state
    session: Session | None = state.get(SESSION_STATE)
    if session is None:
        session = state[SESSION_STATE] = await open_session(
            request.app.state.database,
            read_only=is_read(request),
            lazy_transaction=True,
        )
    return session


DbSession = Annotated[Session, Depends(db_session)]


def _presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("x-api-key")


async def session_and_tenant(request: Request) -> tuple[Session, Tenant]:
    """The request's session and tenant, for a service dependency to take directly: each
    dependency FastAPI resolves (with its sub-dependencies) costs every request, and the
    hottest routes need no other."""
    session = await db_session(request)
    # As FastAPI would: an override stands in (the command line's local import acts for an
    # organization without a key).
    resolve = request.app.dependency_overrides.get(current_tenant, current_tenant)
    return session, await resolve(request, session)


TENANT_ENTERED_STATE = "tenant_entered"


async def current_tenant(request: Request, session: DbSession) -> Tenant:
    state = request.state._state
    entered = state.get(TENANT_ENTERED_STATE)
    if entered is not None and state.get("tenant") is entered:
        return cast(Tenant, entered)  # once per request (again only after a re-run cleared it)
    service = ApiKeyService(ApiKeyRepository(session), request.app.state.secret)
    known = request.app.state.known_keys if reuses_lookups(request) else None
    tenant = await service.authenticate(_presented_key(request), known)
    # Set before the rate limit: a refusal on a remembered key is only given once the key is
    # confirmed (api/routing.py; a revoked key gets its 401).
    request.state.tenant = tenant
    # The key is known only now, and nothing is written or claimed yet: a refused request
    # leaves no trace. A request run again (StaleLookup) was admitted already.
    limiter = request.app.state.rate_limiter
    if limiter is not None and not state.get(ADMITTED_STATE):
        await limiter.admit(request.scope, tenant.api_key_id)
        state[ADMITTED_STATE] = True
    await enter_tenant(request, session, tenant)
    return tenant


async def confirm_remembered_key(request: Request) -> bool:
    """Whether the key a request took from the worker's memory is still active, looked up
    on a session of its own; a key found revoked is forgotten."""
    tenant: Tenant | None = request.state._state.get("tenant")
    if tenant is None or tenant.key_checked:
        return True
    session = await open_session(request.app.state.database, read_only=True)
    try:
        service = ApiKeyService(ApiKeyRepository(session), request.app.state.secret)
        found = await service.find_active(tenant.key_hash)
    finally:
        await session.close()
    if found is None or found.organization_id != tenant.organization_id:
        request.app.state.known_keys.forget(tenant.key_hash)
        return False
    return True


async def enter_tenant(request: Request, session: Session, tenant: Tenant) -> None:
    """Once the tenant is known: the session acts for it (row-level security on PostgreSQL),
    a write opens its transaction (the key lookup ran outside it; see `writes_after_checks`
    for the one that opens it later) and claims its Idempotency-Key. Reads (POST
    /customers/search too) store nothing."""
    request.state.tenant = tenant
    request.state._state[TENANT_ENTERED_STATE] = tenant
    session.scope(tenant.organization_id)
    if not is_read(request) and not _begins_late(request):
        await session.begin_transaction()
        await claim_key(request, session, tenant)


CurrentTenant = Annotated[Tenant, Depends(current_tenant)]


# Every dependency here and in the routers is `async def`: FastAPI runs a plain `def` in a
# worker thread, a hop that costs more than the work these do.
async def limits(request: Request) -> Limits:
    return request.app.state.limits  # type: ignore[no-any-return]


AppLimits = Annotated[Limits, Depends(limits)]
