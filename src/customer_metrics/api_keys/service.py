"""Issuing, listing, revoking and checking API keys."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from customer_metrics import clock
from customer_metrics.api_keys import secrets
from customer_metrics.api_keys.repository import ApiKeyRepository, ApiKeyRow
from customer_metrics.errors import NotFound, Unauthenticated
from customer_metrics.tenancy import Tenant


class KnownKeys:
    """The keys this worker has found active, by hash: the tenant each names. A key's
    organization never changes, so what is remembered cannot go stale; only revocation can
    come later, and a request that uses a remembered key answers only through statements
    that check the key is still active in the same round trip (`Tenant.key_checked`), or
    has it checked first. Bounded: the oldest is forgotten first."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._tenants: OrderedDict[str, Tenant] = OrderedDict()

    def get(self, key_hash: str) -> Tenant | None:
        return self._tenants.get(key_hash)

    def remember(self, key_hash: str, tenant: Tenant) -> None:
        if key_hash not in self._tenants and len(self._tenants) >= self._size:
            self._tenants.popitem(last=False)
        self._tenants[key_hash] = Tenant(
            tenant.organization_id, tenant.api_key_id, key_checked=False, key_hash=key_hash
        )

    def forget(self, key_hash: str) -> None:
        self._tenants.pop(key_hash, None)


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

    async def authenticate(self, presented: str | None, known: KnownKeys | None = None) -> Tenant:
        """The key's tenant. Given `known`, a key this worker has seen active is taken from
        there without asking the database (`key_checked` False): see KnownKeys."""
        # One error for missing, malformed, unknown and revoked keys: nothing to tell apart.
        if not presented or not secrets.is_well_formed(presented):
            raise Unauthenticated(UNAUTHENTICATED_DETAIL)
        key_hash = secrets.hash_key(presented, self._secret)
        if known is not None and (remembered := known.get(key_hash)) is not None:
            return remembered
        tenant = await self.find_active(key_hash)
        if tenant is None:
            raise Unauthenticated(UNAUTHENTICATED_DETAIL)
        if known is not None:
            known.remember(key_hash, tenant)
        return tenant

    async def find_active(self, key_hash: str) -> Tenant | None:
        found = await self._repo.find_active_by_hash_unscoped(key_hash)
        return None if found is None else Tenant(organization_id=found[0], api_key_id=found[1])

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
