"""A worker remembers API keys and metric definitions it has seen (on PostgreSQL), so the
hot routes skip their lookups. What it remembers may go stale — a key revoked, a metric
archived, retyped after a delete, its allowed values changed — and then every answer is the
one a fresh lookup gives, and nothing is stored on the strength of a stale one.

The changes below go through the same app (so the same memory), which does not forget on
its own writes: the statements' own checks are what is tested. On SQLite nothing is
remembered, and the same answers hold."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.exc import DBAPIError

from customer_metrics.main import create_app
from customer_metrics.storage import database as db_module
from customer_metrics.storage import native
from customer_metrics.storage.dialect import async_url, native_dsn
from customer_metrics.values.service import ValueService
from tests.builders import Org, create_metric, create_org, issue_key, revoke_key
from tests.conftest import Backend, api_client

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


# What a review found, each now held: nothing is run twice after a commit, a stale memory
# is refreshed, a re-run costs no second rate-limit token, and a key is checked by its hash.


@pytest.fixture
def on_postgres(backend: Backend) -> None:
    if backend.name != "postgres":
        pytest.skip("nothing is remembered on SQLite")


async def test_a_request_that_fails_after_committing_is_not_run_again(
    on_postgres: None, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_metric(client, name="Seats", key="seats", data_type="INTEGER")  # key remembered
    real = db_module.PostgresSession.commit_now
    lose_answer = [True]

    async def commit_then_lose_the_answer(self: Any) -> None:
        await real(self)
        if lose_answer:
            lose_answer.pop()
            raise DBAPIError("COMMIT", None, ConnectionError("reset"), connection_invalidated=True)

    monkeypatch.setattr(db_module.PostgresSession, "commit_now", commit_then_lose_the_answer)
    written = await client.post("/customers/newco/metrics/seats/values", json={"value": 1})
    monkeypatch.undo()
    assert written.status_code == 503, written.text  # as for any lost connection
    assert await history_of(client, "newco", "seats") == [1]  # stored once


async def test_a_create_whose_durability_wait_fails_is_not_run_again(
    on_postgres: None, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_metric(client, name="Warm-up", key="warm_up")  # key remembered
    real = native.NativeConnection.wait_durable
    lose_answer = [True]

    async def durable_then_lost(self: Any, barrier: Any = None) -> None:
        await real(self, barrier)
        if lose_answer:
            lose_answer.pop()
            raise DBAPIError("FLUSH", None, ConnectionError("reset"), connection_invalidated=True)

    monkeypatch.setattr(native.NativeConnection, "wait_durable", durable_then_lost)
    created = await client.post("/customers/metrics", json={"name": "Seats", "data_type": "NUMBER"})
    monkeypatch.undo()
    assert created.status_code == 503, created.text  # not a 409 against its own first pass
    listed = (await client.get("/customers/metrics")).json()["data"]
    assert [m["name"] for m in listed] == ["Warm-up", "Seats"]


async def test_a_stale_definition_is_read_afresh_once_then_remembered(
    on_postgres: None, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_metric(client, name="Seats", key="seats", data_type="INTEGER")
    assert (await write(client, "seats", 1)).status_code == 201
    gone = await client.delete("/customers/metrics/seats", params={"cascade": "true"})
    assert gone.status_code == 204
    second = await create_metric(client, name="Seats", key="seats", data_type="INTEGER")
    passes = 0
    real = ValueService.write

    async def counted(self: Any, *args: Any) -> Any:
        nonlocal passes
        passes += 1
        return await real(self, *args)

    monkeypatch.setattr(ValueService, "write", counted)
    for value in range(5):
        answer = await write(client, "seats", value)
        assert answer.status_code == 201, answer.text
        assert answer.json()["metric_id"] == second["metric_id"]
    assert passes == 6  # one re-run, then the fresh definition is remembered


async def test_an_error_on_a_remembered_key_costs_one_rate_limit_token(
    on_postgres: None, backend: Backend
) -> None:
    settings = backend.settings.model_copy(
        update={"rate_limit_per_second": 1, "rate_limit_burst": 3}
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        org = await create_org(application)
        async with api_client(application, org.api_key) as scoped:
            await create_metric(scoped, name="Seats", key="seats", data_type="INTEGER")
            missing = await scoped.post(
                "/customers/nobody/metrics/seats/values",
                params={"create_customer": "false"},
                json={"value": 1},
            )
            stale = await scoped.post("/customers/nobody/metrics/seats/values", json={"value": 2})
    assert missing.status_code == 404, missing.text
    assert stale.status_code == 201, stale.text  # the third request of a burst of 3


async def test_a_remembered_key_is_checked_by_its_hash_not_its_id(
    on_postgres: None, backend: Backend, client: httpx.AsyncClient, org: Org
) -> None:
    await create_metric(client, name="Seats", key="seats", data_type="INTEGER")
    assert (await write(client, "seats", 1)).status_code == 201
    assert (await client.get(f"/customers/{CUSTOMER}/metrics")).status_code == 200
    owner = native_dsn(async_url(backend.owner_url or backend.database_url))
    conn = await asyncpg.connect(owner)
    try:
        # The row with this id is no longer this key (as after a restore that handed the id
        # out again to another key).
        await conn.execute(
            "UPDATE api_keys SET key_hash = 'another key' WHERE organization_id = $1", org.id
        )
    finally:
        await conn.close()
    answers = [
        await write(client, "seats", 2),
        await client.get(f"/customers/{CUSTOMER}/metrics"),
        await client.post("/customers/metrics", json={"name": "Late", "data_type": "NUMBER"}),
    ]
    assert [answer.status_code for answer in answers] == [401, 401, 401]


async def history_of(client: httpx.AsyncClient, customer: str, ref: str) -> list[Any]:
    response = await client.get(f"/customers/{customer}/metrics/{ref}/values")
    assert response.status_code == 200, response.text
    return [item["value"] for item in response.json()["data"]]


async def test_a_new_key_writes_through_a_definition_another_key_left_remembered(
    on_postgres: None,
    app: object,
    client: httpx.AsyncClient,
    org: Org,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only what was remembered is checked: a key looked up by this request and a remembered
    definition need no second pass."""
    await create_metric(client, name="Seats", key="seats", data_type="INTEGER")
    assert (await write(client, "seats", 1)).status_code == 201  # the definition remembered
    passes = 0
    real = ValueService.write

    async def counted(self: Any, *args: Any) -> Any:
        nonlocal passes
        passes += 1
        return await real(self, *args)

    monkeypatch.setattr(ValueService, "write", counted)
    async with api_client(app, await issue_key(app, org.id)) as other:
        written = await write(other, "seats", 2)
    assert written.status_code == 201, written.text
    assert passes == 1
    assert await history_of(client, CUSTOMER, "seats") == [2, 1]
