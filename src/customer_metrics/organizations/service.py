"""Creating and listing organizations (the command line's admin plane)."""

from __future__ import annotations

from customer_metrics import clock
from customer_metrics.errors import InvalidRequest, NotFound
from customer_metrics.organizations.repository import OrganizationRepository, OrganizationRow
from customer_metrics.text import normalize_label

NAME_MAX = 200


class OrganizationService:
    def __init__(self, repository: OrganizationRepository) -> None:
        self._repo = repository

    async def create(self, name: str) -> OrganizationRow:
        name = normalize_label(name)
        if not 1 <= len(name) <= NAME_MAX:
            raise InvalidRequest(("name",), f"Organization name must be 1 to {NAME_MAX} characters")
        return await self._repo.create(name, clock.now())

    async def list_all(self) -> list[OrganizationRow]:
        return await self._repo.list_all_unscoped()

    async def require(self, organization_id: int) -> None:
        if not await self._repo.exists(organization_id):
            raise NotFound(f"No organization with id {organization_id}.")

    async def is_empty(self) -> bool:
        return await self._repo.count_unscoped() == 0
