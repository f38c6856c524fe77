"""The tenant every scoped service and repository receives: decided by the API key alone."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tenant:
    organization_id: int
    api_key_id: int
