"""Issuing, listing, revoking and checking API keys."""

from __future__ import annotations

from dataclasses import dataclass

from customer_metrics import clock
from customer_metrics.api_keys import secrets
from customer_metrics.api_keys.repository import ApiKeyRepository, ApiKeyRow
from customer_metrics.errors import NotFound, Unauthenticated
from customer_metrics.tenancy import Tenant


@dataclass(frozen=True, slots=True)
class IssuedKey:
    row: ApiKeyRow
    api_key: str


class ApiKeyService:
    def __init__(self, repository: ApiKeyRepository, secret: bytes) -> None:
        self._repo = repository
        self._secret = secret

    async def issue(self, organization_id: int) -> IssuedKey:
        key = secrets.new_key()
        row = await self._repo.create(
            organization_id,
            secrets.display_prefix(key),
            secrets.hash_key(key, self._secret),
            clock.now(),
        )
        return IssuedKey(row, key)

    async def authenticate(self, presented: str | None) -> Tenant:
        # One error for missing, malformed, unknown and revoked keys: nothing to tell apart.
        if not presented or not secrets.is_well_formed(presented):
            raise Unauthenticated(UNAUTHENTICATED_DETAIL)
        found = await self._repo.find_active_by_hash_unscoped(
            secrets.hash_key(presented, self._secret)
        )
        if found is None:
            raise Unauthenticated(UNAUTHENTICATED_DETAIL)
        return Tenant(organization_id=found[0], api_key_id=found[1])

    async def list_keys(self, organization_id: int | None) -> list[ApiKeyRow]:
        return await self._repo.list_unscoped(organization_id)

    async def revoke(self, prefix: str) -> list[ApiKeyRow]:
        revoked = await self._repo.revoke_by_prefix_unscoped(prefix, clock.now())
        if not revoked:
            raise NotFound(f"No active API key has the prefix {prefix!r}.")
        return revoked


UNAUTHENTICATED_DETAIL = (
    "Missing or invalid API key: send a valid key as 'Authorization: Bearer <key>'."
)
