"""`Idempotency-Key` at the HTTP edge: claim before the route runs, store the response in the
route's own transaction, release the key when the route fails."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, Response

from customer_metrics.idempotency.repository import IdempotencyRepository
from customer_metrics.idempotency.service import (
    IdempotencyService,
    StoredResponse,
    check_key,
    fingerprint,
)
from customer_metrics.storage.database import Session
from customer_metrics.tenancy import Tenant

IDEMPOTENT_METHODS = frozenset({"POST", "PATCH", "DELETE"})
_KEPT_HEADERS = ("content-type", "location")


@dataclass(frozen=True, slots=True)
class Claim:
    service: IdempotencyService
    session: Session
    key: str

    async def finish(self, response: Response) -> None:
        if 200 <= response.status_code < 300:
            headers = {h: response.headers[h] for h in _KEPT_HEADERS if h in response.headers}
            stored = StoredResponse(response.status_code, headers, bytes(response.body))
            await self.service.complete(self.key, stored)
            await self.session.commit_now()
        else:
            await self.abandon()

    async def abandon(self) -> None:
        """The request failed: nothing of it is kept, and the key is free for a retry."""
        await self.session.rollback()
        await self.service.release(self.key)
        await self.session.commit_now()


async def claim_key(request: Request, session: Session, tenant: Tenant) -> None:
    """For a write request that carries an `Idempotency-Key`: claim it (or answer from it)
    before the route runs. Called once the tenant is known."""
    key = request.headers.get("idempotency-key")
    if key is None or request.method not in IDEMPOTENT_METHODS:
        return
    check_key(key)
    service = IdempotencyService(
        IdempotencyRepository(session, tenant),
        request.app.state.settings.idempotency_ttl_seconds,
    )
    print_ = fingerprint(request.method, request.url.path, request.url.query, await request.body())
    await session.commit()  # ends the key lookup's transaction, so the claim is seen at once
    try:
        await service.claim(key, print_)
    finally:
        await session.commit()
    session.deferred = True
    request.state.idempotency = Claim(service, session, key)


def replay_response(stored: StoredResponse) -> Response:
    headers = {**stored.headers, "Idempotent-Replayed": "true"}
    media_type = headers.pop("content-type", None)
    return Response(stored.body, status_code=stored.status, headers=headers, media_type=media_type)
