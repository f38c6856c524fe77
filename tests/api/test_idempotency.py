"""`Idempotency-Key` (contract §4): one effect per key, replays, conflicts, expiry."""

from __future__ import annotations

import asyncio

import jsonschema_rs
import pytest

from customer_metrics.idempotency.purge import purge_once
from tests.builders import create_metric, create_org, current_values
from tests.conftest import api_client


def _key(name: str) -> dict[str, str]:
    return {"Idempotency-Key": name}


async def test_repeat_with_same_body_replays_the_first_response(client):
    body = {"name": "ARR", "data_type": "NUMBER"}
    first = await client.post("/customers/metrics", json=body, headers=_key("create-arr"))
    second = await client.post("/customers/metrics", json=body, headers=_key("create-arr"))
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["content-type"] == "application/json"
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    listed = (await client.get("/customers/metrics")).json()["data"]
    assert len(listed) == 1


async def test_retried_increment_counts_once(client):
    await create_metric(client, name="Logins", data_type="INTEGER")
    for _ in range(3):
        response = await client.post(
            "/customers/acme/metrics/logins/values", json={"increment": 1}, headers=_key("login-1")
        )
        assert response.status_code == 201
    assert await current_values(client, "acme") == {"logins": 1}


async def test_retried_batch_stores_once_and_replays_the_answer(client):
    await create_metric(client, name="Logins", data_type="INTEGER")
    body = {"values": [{"customer_id": "a", "metric": "logins", "increment": 5}]}
    answers = [
        await client.post("/customers/metrics/values", json=body, headers=_key("batch-1"))
        for _ in range(2)
    ]
    assert answers[0].json() == answers[1].json() == {"accepted": 1, "rejected": 0, "errors": []}
    assert await current_values(client, "a") == {"logins": 5}


async def test_same_key_with_another_body_is_422_idempotency_conflict(client):
    await client.post(
        "/customers/metrics", json={"name": "A", "data_type": "NUMBER"}, headers=_key("k")
    )
    response = await client.post(
        "/customers/metrics", json={"name": "B", "data_type": "NUMBER"}, headers=_key("k")
    )
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_conflict"
    assert [m["name"] for m in (await client.get("/customers/metrics")).json()["data"]] == ["A"]


async def test_the_conflict_is_a_422_the_openapi_document_admits(app, client):
    """Clients generated from /openapi.json read a 422 as the validation shape unless the
    document says otherwise: every operation that takes a key documents the conflict too."""
    document = app.openapi()
    body = {"name": "A", "data_type": "NUMBER"}
    await client.post("/customers/metrics", json=body, headers=_key("doc"))
    conflict = await client.post(
        "/customers/metrics", json={**body, "name": "B"}, headers=_key("doc")
    )
    assert conflict.status_code == 422
    validation = await client.post("/customers/metrics", json={"name": 1})
    assert validation.status_code == 422
    keyed = [
        operation
        for operations in document["paths"].values()
        for operation in operations.values()
        if any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))
    ]
    assert len(keyed) >= 9
    for operation in keyed:
        documented = operation["responses"]["422"]
        assert "idempotency_conflict" in documented["description"]
        schema = documented.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:  # documented as any body
            continue
        validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
        assert validator.is_valid(conflict.json()), operation["operationId"]
        assert validator.is_valid(validation.json()), operation["operationId"]
        assert not validator.is_valid({"detail": 1}), operation["operationId"]


async def test_same_key_on_another_route_is_a_conflict(client):
    await client.post("/customers", json={"customer_id": "a"}, headers=_key("k"))
    response = await client.post("/customers/metrics", json={"customer_id": "a"}, headers=_key("k"))
    assert response.status_code == 422


async def test_failed_requests_are_not_stored_and_free_the_key(client):
    bad = await client.post(
        "/customers/metrics", json={"name": "A", "data_type": "MONEY"}, headers=_key("k")
    )
    assert bad.status_code == 422
    await create_metric(client, name="Taken")
    conflict = await client.post(
        "/customers/metrics", json={"name": "taken", "data_type": "NUMBER"}, headers=_key("k2")
    )
    assert conflict.status_code == 409
    fixed = await client.post(
        "/customers/metrics", json={"name": "Fresh", "data_type": "NUMBER"}, headers=_key("k2")
    )
    assert fixed.status_code == 201
    assert "idempotent-replayed" not in fixed.headers


async def test_patch_and_delete_replay(client):
    await create_metric(client, name="ARR")
    first = await client.patch("/customers/metrics/arr", json={"unit": "USD"}, headers=_key("p"))
    again = await client.patch("/customers/metrics/arr", json={"unit": "USD"}, headers=_key("p"))
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    gone = await client.delete("/customers/metrics/arr", headers=_key("d"))
    replay = await client.delete("/customers/metrics/arr", headers=_key("d"))
    assert gone.status_code == replay.status_code == 204
    assert replay.headers["idempotent-replayed"] == "true"


async def test_keys_are_per_organization(app, client):
    body = {"name": "ARR", "data_type": "NUMBER"}
    await client.post("/customers/metrics", json=body, headers=_key("shared"))
    other_org = await create_org(app)
    async with api_client(app, other_org.api_key) as other:
        response = await other.post("/customers/metrics", json=body, headers=_key("shared"))
    assert response.status_code == 201
    assert "idempotent-replayed" not in response.headers
    assert response.json()["organization_id"] == other_org.id


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
async def test_malformed_keys_are_422(client, key):
    response = await client.post(
        "/customers/metrics",
        json={"name": "A", "data_type": "NUMBER"},
        headers=[(b"Idempotency-Key", key.encode("utf-8"))],
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert (await client.get("/customers/metrics")).json()["data"] == []


async def test_concurrent_requests_with_one_key_have_one_effect(client):
    await create_metric(client, name="Logins", data_type="INTEGER")
    responses = await asyncio.gather(
        *(
            client.post(
                "/customers/acme/metrics/logins/values", json={"increment": 1}, headers=_key("once")
            )
            for _ in range(16)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}
    assert statuses.count(201) >= 1
    created = [r for r in responses if r.status_code == 201]
    assert len({r.content for r in created}) == 1
    for r in responses:
        if r.status_code == 409:
            assert r.json()["code"] == "idempotency_in_progress"
    assert await current_values(client, "acme") == {"logins": 1}


async def test_expired_keys_run_again_and_are_purged(app, client, monkeypatch):
    await create_metric(client, name="Logins", data_type="INTEGER")
    monkeypatch.setattr(app.state.settings, "idempotency_ttl_seconds", 0)
    url = "/customers/acme/metrics/logins/values"
    await client.post(url, json={"increment": 1}, headers=_key("old"))
    again = await client.post(url, json={"increment": 1}, headers=_key("old"))
    assert "idempotent-replayed" not in again.headers
    assert await current_values(client, "acme") == {"logins": 2}
    await asyncio.sleep(0.01)
    assert await purge_once(app.state.database) >= 1
