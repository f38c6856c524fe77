"""Concurrent increments through a real server: no lost update, and one Idempotency-Key shared
by concurrent retries has exactly one effect."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.process.conftest import ServerProcess

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("process")]

INCREMENTS = 50
SAME_KEY_REQUESTS = 32
SAME_KEY_ROUNDS = 5
CUSTOMER = "acme-increments"


def _describe(responses: list[httpx.Response]) -> str:
    return "\n".join(
        f"{r.status_code} {r.headers.get('idempotent-replayed')} {r.text}" for r in responses
    )


async def _current(client: httpx.AsyncClient, key: str) -> Any:
    response = await client.get(f"/customers/{CUSTOMER}/metrics")
    assert response.status_code == 200, response.text
    values = {row["key"]: row["value"] for row in response.json()["data"]}
    return values[key]


async def _history(client: httpx.AsyncClient, key: str) -> list[dict[str, Any]]:
    observations: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        page = await client.get(f"/customers/{CUSTOMER}/metrics/{key}/values", params=params)
        assert page.status_code == 200, page.text
        observations += page.json()["data"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return observations
        params["cursor"] = cursor


async def test_50_concurrent_increments_lose_no_update(server: ServerProcess):
    org = server.create_org("Concurrent increments")
    async with server.client(org["api_key"]) as client:
        created = await client.post(
            "/customers/metrics", json={"name": "Logins", "data_type": "INTEGER"}
        )
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        assert key == "logins"
        path = f"/customers/{CUSTOMER}/metrics/{key}/values"

        responses = await asyncio.gather(
            *(client.post(path, json={"increment": 1}) for _ in range(INCREMENTS))
        )

        assert not [r for r in responses if r.status_code >= 500], _describe(responses)
        assert [r.status_code for r in responses] == [201] * INCREMENTS, _describe(responses)
        # Each caller was told the total its own increment produced: 1..50, each once.
        told = sorted(r.json()["value"] for r in responses)
        assert told == list(range(1, INCREMENTS + 1)), told
        assert await _current(client, key) == INCREMENTS

        history = await _history(client, key)
        values = [o["value"] for o in history]
        instants = [o["observed_at"] for o in history]
        # Newest first, and the newest is the current value.
        assert values[0] == INCREMENTS, history
        assert instants == sorted(instants, reverse=True), history
        assert len(set(instants)) == len(instants), history
        # Every observation is a total some caller was told, counting up with time: nothing
        # in the history is a lost update (a repeated total) or a value nobody produced.
        assert values == sorted(set(values), reverse=True), history
        assert set(values) <= set(range(1, INCREMENTS + 1)), history
        print(f"history after {INCREMENTS} concurrent increments holds {len(history)} observations")


async def test_every_acknowledged_increment_stays_in_history(server: ServerProcess):
    """Each 201 of an increment is an observation (value, observed_at); a later increment
    must not silently replace it, or the history of a counter shows totals skipping."""
    org = server.create_org("Increment history")
    async with server.client(org["api_key"]) as client:
        created = await client.post(
            "/customers/metrics", json={"name": "Logins", "data_type": "INTEGER"}
        )
        assert created.status_code == 201, created.text
        path = f"/customers/{CUSTOMER}/metrics/logins/values"

        responses = await asyncio.gather(
            *(client.post(path, json={"increment": 1}) for _ in range(INCREMENTS))
        )
        assert [r.status_code for r in responses] == [201] * INCREMENTS, _describe(responses)

        history = await _history(client, "logins")
        told = {(r.json()["value"], r.json()["observed_at"]) for r in responses}
        kept = {(o["value"], o["observed_at"]) for o in history}
        replaced = sorted(told - kept)
        assert not replaced, (
            f"{len(replaced)} of {INCREMENTS} acknowledged increments are gone from the history "
            f"(value, observed_at): {replaced[:8]}; history holds {len(history)} observations"
        )
        assert [o["value"] for o in history] == list(range(INCREMENTS, 0, -1))


async def test_32_concurrent_retries_with_one_idempotency_key_increment_once(
    server: ServerProcess,
):
    org = server.create_org("Idempotent increments")
    # Connections opened beforehand and kept, so the 32 requests of a round really overlap.
    keep = httpx.Limits(max_keepalive_connections=SAME_KEY_REQUESTS)
    async with server.client(org["api_key"], limits=keep) as client:
        created = await client.post(
            "/customers/metrics", json={"name": "Seats", "data_type": "INTEGER"}
        )
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        path = f"/customers/{CUSTOMER}/metrics/{key}/values"
        first = await client.post(path, json={"value": 10})
        assert first.status_code == 201, first.text
        await asyncio.gather(*(client.get("/customers/metrics") for _ in range(SAME_KEY_REQUESTS)))

        statuses: Counter[str] = Counter()
        for round_ in range(1, SAME_KEY_ROUNDS + 1):
            headers = {"Idempotency-Key": f"seat-bump-{round_}"}
            responses = await asyncio.gather(
                *(
                    client.post(path, json={"increment": 1}, headers=headers)
                    for _ in range(SAME_KEY_REQUESTS)
                )
            )

            described = f"round {round_}:\n{_describe(responses)}"
            assert not [r for r in responses if r.status_code >= 500], described
            assert {r.status_code for r in responses} <= {201, 409}, described
            busy = [r.json() for r in responses if r.status_code == 409]
            assert {b["code"] for b in busy} <= {"idempotency_in_progress"}, described
            done = [r for r in responses if r.status_code == 201]
            originals = [r for r in done if r.headers.get("idempotent-replayed") != "true"]
            assert len(originals) == 1, described
            # Replays are the stored answer itself, byte for byte.
            assert {r.content for r in done} == {originals[0].content}, described
            assert originals[0].json()["value"] == 10 + round_, described
            assert await _current(client, key) == 10 + round_, described
            statuses.update(
                "replayed" if r.headers.get("idempotent-replayed") == "true" else str(r.status_code)
                for r in responses
            )

            # Once the first has finished, a retry is the stored answer, never a new effect.
            again = await client.post(path, json={"increment": 1}, headers=headers)
            assert again.status_code == 201, again.text
            assert again.headers.get("idempotent-replayed") == "true"
            assert again.content == originals[0].content
            assert await _current(client, key) == 10 + round_

        history = [o["value"] for o in await _history(client, key)]
        assert history == list(range(10 + SAME_KEY_ROUNDS, 9, -1))
        print(
            f"{SAME_KEY_ROUNDS} rounds of {SAME_KEY_REQUESTS} same-key requests: {dict(statuses)}"
        )
