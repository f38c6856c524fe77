"""A worker remembers API keys and metric definitions it has seen (on PostgreSQL), so the
hot routes skip their lookups. What it remembers may go stale — a key revoked, a metric
archived, retyped after a delete, its allowed values changed — and then every answer is the
one a fresh lookup gives, and nothing is stored on the strength of a stale one.

The changes below go through the same app (so the same memory), which does not forget on
its own writes: the statements' own checks are what is tested. On SQLite nothing is
remembered, and the same answers hold."""

from __future__ import annotations

from typing import Any

import httpx

from tests.builders import Org, create_metric, issue_key, revoke_key
from tests.conftest import api_client

CUSTOMER = "acme"


async def write(client: httpx.AsyncClient, ref: str, value: Any) -> httpx.Response:
    return await client.post(f"/customers/{CUSTOMER}/metrics/{ref}/values", json={"value": value})


async def history(client: httpx.AsyncClient, ref: str) -> list[Any]:
    response = await client.get(f"/customers/{CUSTOMER}/metrics/{ref}/values")
    assert response.status_code == 200, response.text
    return [item["value"] for item in response.json()["data"]]


async def test_an_archived_metric_refuses_writes_once_its_definition_was_remembered(
    client: httpx.AsyncClient,
) -> None:
    await create_metric(client, name="Seats", key="seats", data_type="INTEGER")
    assert (await write(client, "seats", 1)).status_code == 201
    assert (await write(client, "seats", 2)).status_code == 201
    archived = await client.patch("/customers/metrics/seats", json={"archived": True})
    assert archived.status_code == 200, archived.text

    refused = await write(client, "seats", 3)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "metric_archived"
    assert await history(client, "seats") == [2, 1]

    restored = await client.patch("/customers/metrics/seats", json={"archived": False})
    assert restored.status_code == 200, restored.text
    assert (await write(client, "seats", 4)).status_code == 201
    assert await history(client, "seats") == [4, 2, 1]


async def test_allowed_values_are_those_of_the_definition_as_it_stands(
    client: httpx.AsyncClient,
) -> None:
    await create_metric(
        client, name="Plan", key="plan", data_type="STRING", allowed_values=["free", "pro", "team"]
    )
    assert (await write(client, "plan", "free")).status_code == 201

    widened = await client.patch(
        "/customers/metrics/plan", json={"allowed_values": ["free", "pro", "team", "enterprise"]}
    )
    assert widened.status_code == 200, widened.text
    accepted = await write(client, "plan", "enterprise")
    assert accepted.status_code == 201, accepted.text

    narrowed = await client.patch(
        "/customers/metrics/plan", json={"allowed_values": ["free", "pro", "enterprise"]}
    )
    assert narrowed.status_code == 200, narrowed.text
    refused = await write(client, "plan", "team")
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "value"]
    assert await history(client, "plan") == ["enterprise", "free"]

    unrestricted = await client.patch("/customers/metrics/plan", json={"allowed_values": None})
    assert unrestricted.status_code == 200, unrestricted.text
    assert (await write(client, "plan", "anything")).status_code == 201
    assert await history(client, "plan") == ["anything", "enterprise", "free"]


async def test_a_key_deleted_and_given_to_a_new_metric_names_the_new_one(
    client: httpx.AsyncClient,
) -> None:
    first = await create_metric(client, name="Score", key="score", data_type="NUMBER")
    assert (await write(client, "score", 5)).status_code == 201
    deleted = await client.delete("/customers/metrics/score", params={"cascade": "true"})
    assert deleted.status_code == 204, deleted.text

    gone = await write(client, "score", 6)
    assert gone.status_code == 404, gone.text

    second = await create_metric(client, name="Score", key="score", data_type="STRING")
    assert second["metric_id"] != first["metric_id"]
    written = await write(client, "score", "high")
    assert written.status_code == 201, written.text
    assert written.json()["metric_id"] == second["metric_id"]
    wrong_type = await write(client, "score", 7)
    assert wrong_type.status_code == 422, wrong_type.text
    assert await history(client, "score") == ["high"]


async def test_a_revoked_key_is_refused_on_every_route_that_remembered_it(
    app: object, org: Org
) -> None:
    async with api_client(app, org.api_key) as client:
        await create_metric(client, name="Seats", key="seats", data_type="INTEGER")
        assert (await write(client, "seats", 1)).status_code == 201
        assert (await client.get(f"/customers/{CUSTOMER}/metrics")).status_code == 200

        await revoke_key(app, org.api_key[:11])

        answers = [
            await client.post("/customers/metrics", json={"name": "Late", "data_type": "NUMBER"}),
            await write(client, "seats", 2),
            await write(client, "seats", "not a number"),
            await client.post(f"/customers/{CUSTOMER}/metrics/seats/values", json={"increment": 1}),
            await client.get(f"/customers/{CUSTOMER}/metrics"),
            await client.get(
                f"/customers/{CUSTOMER}/metrics", params={"as_of": "2030-01-01T00:00:00Z"}
            ),
            await client.get("/customers/nobody/metrics"),
        ]
    assert [answer.status_code for answer in answers] == [401] * len(answers)
    assert len({answer.content for answer in answers}) == 1

    async with api_client(app, await issue_key(app, org.id)) as other:
        metrics = (await other.get("/customers/metrics")).json()["data"]
        assert [m["key"] for m in metrics] == ["seats"]
        assert await history(other, "seats") == [1]
