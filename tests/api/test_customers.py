"""Customers (contract §2): create, upsert, read, patch, list, erase."""

from __future__ import annotations

import pytest

from tests.builders import create_metric, create_org, write_value
from tests.conftest import api_client


async def test_create_with_and_without_customer_id(client, org):
    response = await client.post(
        "/customers", json={"customer_id": " acme-1 ", "name": "Acme", "email": "a@acme.io"}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["customer_id"] == "acme-1"
    assert (body["name"], body["email"], body["organization_id"]) == ("Acme", "a@acme.io", org.id)
    assert response.headers["location"] == "/external/v1/customers/acme-1"
    generated = (await client.post("/customers", json={"name": "Anonymous"})).json()
    assert generated["customer_id"].startswith("CUSTOMER-")
    assert (await client.get(f"/customers/{generated['customer_id']}")).status_code == 200


async def test_duplicate_customer_id_is_409_customer_exists(client):
    await client.post("/customers", json={"customer_id": "acme"})
    response = await client.post("/customers", json={"customer_id": "acme", "name": "Other"})
    assert response.status_code == 409
    assert response.json()["code"] == "customer_exists"
    assert (await client.get("/customers/acme")).json()["name"] is None


async def test_customer_ids_are_case_sensitive(client):
    assert (await client.post("/customers", json={"customer_id": "Acme"})).status_code == 201
    assert (await client.post("/customers", json={"customer_id": "acme"})).status_code == 201


async def test_generated_ids_skip_ids_the_client_took(client):
    await client.post("/customers", json={"customer_id": "CUSTOMER-001"})
    generated = (await client.post("/customers", json={})).json()
    assert generated["customer_id"] != "CUSTOMER-001"
    assert generated["customer_id"].startswith("CUSTOMER-")


async def test_put_creates_then_replaces(client):
    created = await client.put("/customers/acme", json={"name": "Acme", "email": "x@acme.io"})
    assert created.status_code == 201
    replaced = await client.put("/customers/acme", json={"name": "Acme Inc"})
    assert replaced.status_code == 200
    assert (replaced.json()["name"], replaced.json()["email"]) == ("Acme Inc", None)
    assert replaced.json()["id"] == created.json()["id"]
    again = await client.put("/customers/acme", json={"name": "Acme Inc"})
    assert again.status_code == 200


async def test_patch_changes_only_sent_fields(client):
    await client.put("/customers/acme", json={"name": "Acme", "email": "x@acme.io"})
    patched = await client.patch("/customers/acme", json={"email": None})
    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["email"]) == ("Acme", None)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"customer_id": "metrics"}, ["body", "customer_id"]),
        ({"customer_id": "search"}, ["body", "customer_id"]),
        ({"customer_id": "a/b"}, ["body", "customer_id"]),
        ({"customer_id": "   "}, ["body", "customer_id"]),
        ({"customer_id": "x" * 256}, ["body", "customer_id"]),
        ({"customer_id": "a\x00b"}, ["body", "customer_id"]),
        ({"customer_id": 42}, ["body", "customer_id"]),
        ({"email": "not-an-email"}, ["body", "email"]),
        ({"name": "n" * 256}, ["body", "name"]),
        ({"nickname": "x"}, ["body", "nickname"]),
    ],
)
async def test_invalid_customers_are_422_and_store_nothing(client, body, loc):
    response = await client.post("/customers", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert (await client.get("/customers")).json()["data"] == []


async def test_reserved_id_in_put_path_is_422(client):
    response = await client.put("/customers/search", json={})
    assert response.status_code == 422


async def test_list_filters_by_id_name_and_email_and_paginates(client):
    for i in range(5):
        await client.put(f"/customers/c{i}", json={"name": f"Name {i}", "email": f"u{i}@x.io"})
    await client.put("/customers/special", json={"name": "ACME Corp"})

    async def ids(**params):
        body = (await client.get("/customers", params=params)).json()
        return [c["customer_id"] for c in body["data"]]

    assert await ids(q="acme") == ["special"]
    assert await ids(q="U3@") == ["c3"]
    assert await ids(q="c1") == ["c1"]
    first = (await client.get("/customers", params={"limit": 4})).json()
    second = (
        await client.get("/customers", params={"limit": 4, "cursor": first["next_cursor"]})
    ).json()
    assert [c["customer_id"] for c in first["data"] + second["data"]] == [
        "c0",
        "c1",
        "c2",
        "c3",
        "c4",
        "special",
    ]
    assert second["next_cursor"] is None


async def test_delete_erases_the_customer_and_every_value(client):
    await create_metric(client, name="ARR")
    await write_value(client, "acme", "arr", value=100)
    await write_value(client, "acme", "arr", value=200, observed_at="2024-01-01T00:00:00Z")
    response = await client.delete("/customers/acme")
    assert response.status_code == 204
    assert (await client.get("/customers/acme")).status_code == 404
    assert (await client.get("/customers/acme/metrics")).status_code == 404
    usage = (await client.get("/customers/metrics/arr")).json()["usage"]
    assert usage == {"customers": 0, "values": 0, "last_value_at": None}
    # The id can be used again, starting from nothing.
    await write_value(client, "acme", "arr", value=1)
    history = (await client.get("/customers/acme/metrics/arr/values")).json()["data"]
    assert [h["value"] for h in history] == [1]


async def test_another_organizations_customer_is_404_on_every_route(app, client):
    await client.put("/customers/acme", json={"name": "Secret"})
    intruder = await create_org(app)
    async with api_client(app, intruder.api_key) as other:
        answers = [
            await other.get("/customers/acme"),
            await other.patch("/customers/acme", json={"name": "x"}),
            await other.delete("/customers/acme"),
            await other.get("/customers/acme/metrics"),
        ]
        listed = (await other.get("/customers")).json()["data"]
    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert listed == []
    assert (await client.get("/customers/acme")).json()["name"] == "Secret"
