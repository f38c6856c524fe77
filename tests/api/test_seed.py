"""The seed page, to the letter: its request, its 201 body and its 422 shape."""

from __future__ import annotations

import re

import httpx

from customer_metrics.metrics.schemas import MetricOut

SEED_REQUEST = {
    "name": "Customer Tier",
    "description": "The service level tier the customer is subscribed to.",
    "data_type": "STRING",
}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SEED_FIELDS = {
    "id": int,
    "metric_id": str,
    "name": str,
    "description": str,
    "data_type": str,
    "organization_id": int,
    "time_created": str,
    "time_updated": str,
}


async def test_seed_example_returns_every_seed_field_with_seed_types(client, org):
    response = await client.post("/customers/metrics", json=SEED_REQUEST)

    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    for field, kind in SEED_FIELDS.items():
        assert type(body[field]) is kind, field
    assert body["metric_id"] == "METRIC-001"
    assert body["id"] == 1
    assert body["name"] == SEED_REQUEST["name"]
    assert body["description"] == SEED_REQUEST["description"]
    assert body["data_type"] == "STRING"
    assert body["organization_id"] == org.id
    assert TIMESTAMP.match(body["time_created"])
    assert body["time_created"] == body["time_updated"]
    assert response.headers["location"] == "/external/v1/customers/metrics/METRIC-001"
    # Exactly the documented model, field for field and in its order.
    assert list(body) == list(MetricOut.model_fields)
    assert MetricOut.model_validate(body).model_dump(mode="json") == body
    fetched = (await client.get("/customers/metrics/METRIC-001")).json()
    assert {field: fetched[field] for field in body} == body


async def test_seed_doubled_path_answers_and_is_marked_deprecated(client):
    response = await client.post("/external/v1/customers/metrics", json=SEED_REQUEST)

    assert response.status_code == 201
    assert response.json()["metric_id"] == "METRIC-001"
    assert response.headers["deprecation"] == "true"
    assert "</external/v1/customers/metrics>" in response.headers["link"]
    again = await client.get("/customers/metrics/METRIC-001")
    assert again.status_code == 200
    assert "deprecation" not in again.headers


async def test_doubled_path_errors_are_marked_deprecated_too(client):
    response = await client.post("/external/v1/customers/metrics", json={})
    assert response.status_code == 422
    assert response.headers["deprecation"] == "true"


async def test_doubled_path_is_not_in_openapi(anon: httpx.AsyncClient):
    paths = (await anon.get("/openapi.json")).json()["paths"]
    assert "/external/v1/customers/metrics" in paths
    assert not any(p.startswith("/external/v1/external/v1") for p in paths)


async def test_seed_422_shape_for_missing_fields(client):
    response = await client.post("/customers/metrics", json={"description": "x"})

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert {tuple(item["loc"]) for item in detail} == {("body", "name"), ("body", "data_type")}
    for item in detail:
        assert isinstance(item["msg"], str)
        assert item["msg"]
        assert item["type"] == "missing"


async def test_metric_numbers_are_per_organization(client, app):
    from tests.builders import create_org
    from tests.conftest import api_client

    await client.post("/customers/metrics", json={"name": "A", "data_type": "NUMBER"})
    other = await create_org(app)
    async with api_client(app, other.api_key) as other_client:
        response = await other_client.post(
            "/customers/metrics", json={"name": "A", "data_type": "NUMBER"}
        )
    assert response.status_code == 201
    assert response.json()["metric_id"] == "METRIC-001"
    assert response.json()["organization_id"] == other.id
