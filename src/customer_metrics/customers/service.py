"""The rules for customers. Raises domain errors; never commits."""

from __future__ import annotations

import re

from customer_metrics import clock
from customer_metrics.customers.repository import CustomerRepository, CustomerRow
from customer_metrics.customers.schemas import EMAIL_MAX, NAME_MAX
from customer_metrics.errors import Conflict, InvalidRequest, NotFound
from customer_metrics.limits import Limits, check_length
from customer_metrics.text import check_characters, is_clean, normalize_label

# `/customers/metrics…` and `/customers/search` are routes, so these can never be customer ids.
RESERVED_IDS = frozenset({"metrics", "search"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


class CustomerService:
    def __init__(self, repository: CustomerRepository, limits: Limits) -> None:
        self._repo = repository
        self._limits = limits

    def check_customer_id(self, customer_id: str, loc: tuple[str | int, ...]) -> str:
        """Normalises a customer id from a body or a path, or raises 422."""
        try:
            customer_id = normalize_label(check_characters(customer_id))
        except ValueError as error:
            raise InvalidRequest(loc, str(error), "string_invalid_character") from None
        check_length(loc, customer_id, self._limits.customer_id)
        if "/" in customer_id:
            raise InvalidRequest(loc, "A customer id cannot contain '/'", "value_error")
        if customer_id in RESERVED_IDS:
            raise InvalidRequest(
                loc, f"{customer_id!r} is reserved and cannot be a customer id", "value_error"
            )
        return customer_id

    async def create(
        self, customer_id: str | None, name: str | None, email: str | None
    ) -> CustomerRow:
        _check_contact(name, email)
        if customer_id is not None:
            customer_id = self.check_customer_id(customer_id, ("body", "customer_id"))
        created = await self._insert(customer_id, name, email)
        if created is None:
            raise Conflict(
                f"A customer with id {customer_id!r} already exists; use PUT to replace it.",
                "customer_exists",
            )
        return created

    async def put(
        self, customer_id: str, name: str | None, email: str | None
    ) -> tuple[CustomerRow, bool]:
        """Create or replace; returns the row and whether it was created."""
        _check_contact(name, email)
        customer_id = self.check_customer_id(customer_id, ("path", "customer_id"))
        existing = await self._repo.get(customer_id)
        if existing is None:
            created = await self._insert(customer_id, name, email)
            if created is not None:
                return created, True
            existing = await self.get(customer_id)
        replaced = await self._repo.update(
            existing.id, {"name": name, "email": email, "time_updated": clock.now()}
        )
        return replaced, False

    async def update(self, customer_id: str, changes: dict[str, str | None]) -> CustomerRow:
        _check_contact(changes.get("name"), changes.get("email"))
        current = await self.get(customer_id)
        effective = {k: v for k, v in changes.items() if getattr(current, k) != v}
        if not effective:
            return current
        return await self._repo.update(current.id, {**effective, "time_updated": clock.now()})

    async def get(self, customer_id: str) -> CustomerRow:
        # An id no customer can have (a NUL, a lone surrogate) is simply not found.
        row = await self._repo.get(normalize_label(customer_id)) if is_clean(customer_id) else None
        if row is None:
            raise NotFound(f"No customer {customer_id!r} in this organization.")
        return row

    async def delete(self, customer_id: str) -> None:
        """Erases the customer and every value recorded for them, in the caller's transaction."""
        current = await self.get(customer_id)
        await self._repo.delete_with_values(current.id)

    async def list_page(self, query: str | None, after_id: int, limit: int) -> list[CustomerRow]:
        return await self._repo.list_page(query, after_id, limit)

    async def ref_for_write(self, customer_id: str, create: bool) -> int:
        """The internal id of a customer about to receive a value, creating it when allowed."""
        customer_id = self.check_customer_id(customer_id, ("path", "customer_id"))
        ref = await self._repo.ref_of(customer_id)
        if ref is not None:
            return ref
        if not create:
            raise NotFound(f"No customer {customer_id!r} in this organization.")
        created = await self._insert(customer_id, None, None)
        if created is not None:
            return created.id
        ref = await self._repo.ref_of(customer_id)
        assert ref is not None
        return ref

    async def _insert(
        self, customer_id: str | None, name: str | None, email: str | None
    ) -> CustomerRow | None:
        now = clock.now()
        while True:
            number = await self._repo.next_number()
            row = await self._repo.insert_if_absent(
                {
                    "id": number,
                    "customer_id": customer_id or f"CUSTOMER-{number:03d}",
                    "name": name,
                    "email": email,
                    "time_created": now,
                    "time_updated": now,
                }
            )
            if row is not None or customer_id is not None:
                return row
            # A generated id was already taken by a client-chosen one: take the next number.


def _check_contact(name: str | None, email: str | None) -> None:
    if name is not None:
        check_length(("body", "name"), name, NAME_MAX, 0)
    if email is not None:
        check_length(("body", "email"), email, EMAIL_MAX)
        if not _EMAIL.match(email):
            raise InvalidRequest(
                ("body", "email"), "Not an email address (expected name@domain.tld)", "value_error"
            )
