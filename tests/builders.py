"""Test data builders: organizations with keys, made through the same services the CLI uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from customer_metrics.api_keys.repository import ApiKeyRepository
from customer_metrics.api_keys.service import ApiKeyService
from customer_metrics.organizations.repository import OrganizationRepository
from customer_metrics.organizations.service import OrganizationService
from customer_metrics.storage.database import open_session


@dataclass(frozen=True)
class Org:
    id: int
    api_key: str
    prefix: str


async def create_org(app: Any, name: str = "Test org") -> Org:
    session = await open_session(app.state.database, read_only=False)
    try:
        org = await OrganizationService(OrganizationRepository(session)).create(name)
        issued = await ApiKeyService(ApiKeyRepository(session), app.state.secret).issue(org.id)
        await session.commit()
    finally:
        await session.close()
    return Org(org.id, issued.api_key, issued.row.prefix)


async def issue_key(app: Any, organization_id: int) -> str:
    session = await open_session(app.state.database, read_only=False)
    try:
        issued = await ApiKeyService(ApiKeyRepository(session), app.state.secret).issue(
            organization_id
        )
        await session.commit()
    finally:
        await session.close()
    return issued.api_key


async def revoke_key(app: Any, prefix: str) -> None:
    session = await open_session(app.state.database, read_only=False)
    try:
        await ApiKeyService(ApiKeyRepository(session), app.state.secret).revoke(prefix)
        await session.commit()
    finally:
        await session.close()


async def create_metric(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"data_type": "NUMBER", **fields}
    response = await client.post("/customers/metrics", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def write_value(
    client: httpx.AsyncClient, customer_id: str, ref: str, expect: int = 201, **body: Any
) -> dict[str, Any]:
    response = await client.post(f"/customers/{customer_id}/metrics/{ref}/values", json=body)
    assert response.status_code == expect, response.text
    return response.json()  # type: ignore[no-any-return]


async def current_values(
    client: httpx.AsyncClient, customer_id: str, **params: Any
) -> dict[str, Any]:
    response = await client.get(f"/customers/{customer_id}/metrics", params=params)
    assert response.status_code == 200, response.text
    return {row["key"]: row["value"] for row in response.json()["data"]}
