"""Concurrent creates through a real server: one winner per name, gapless numbers."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.process.conftest import ServerProcess

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("process")]


def _describe(responses: list[httpx.Response]) -> str:
    return "\n".join(f"{r.status_code} {r.text}" for r in responses)


async def _metrics_named(client: httpx.AsyncClient, name: str) -> list[dict[str, object]]:
    listed = await client.get("/customers/metrics", params={"limit": 200})
    assert listed.status_code == 200, listed.text
    assert listed.json()["next_cursor"] is None
    return [m for m in listed.json()["data"] if m["name"] == name]


async def test_32_concurrent_creates_of_one_name_make_one_metric(server: ServerProcess):
    org = server.create_org("Race for one name")
    name = "Seats purchased"
    async with server.client(org["api_key"]) as client:
        responses = await asyncio.gather(
            *(
                client.post("/customers/metrics", json={"name": name, "data_type": "NUMBER"})
                for _ in range(32)
            )
        )

        statuses = sorted(r.status_code for r in responses)
        assert not [s for s in statuses if s >= 500], _describe(responses)
        assert statuses == [201] + [409] * 31, _describe(responses)
        conflicts = [r.json() for r in responses if r.status_code == 409]
        assert {c["code"] for c in conflicts} == {"name_taken"}, conflicts
        assert all(isinstance(c["detail"], str) and c["detail"] for c in conflicts), conflicts

        (created,) = [r.json() for r in responses if r.status_code == 201]
        assert created["name"] == name
        assert created["organization_id"] == org["organization_id"]
        # The 31 losers rolled back: they hold no number, so the winner is the first one.
        assert created["metric_id"] == "METRIC-001"

        stored = await _metrics_named(client, name)
        assert [m["metric_id"] for m in stored] == [created["metric_id"]]
        fetched = await client.get(f"/customers/metrics/{created['metric_id']}")
        assert fetched.status_code == 200, fetched.text
        assert fetched.json()["name"] == name

        # No gap left behind by the refused creates.
        following = await client.post(
            "/customers/metrics", json={"name": "Seats used", "data_type": "NUMBER"}
        )
        assert following.status_code == 201, following.text
        assert following.json()["metric_id"] == "METRIC-002"


async def test_40_concurrent_creates_are_numbered_1_to_40_without_gaps(server: ServerProcess):
    org = server.create_org("Forty at once")
    names = [f"Metric number {i:02d}" for i in range(40)]
    async with server.client(org["api_key"]) as client:
        responses = await asyncio.gather(
            *(
                client.post("/customers/metrics", json={"name": name, "data_type": "NUMBER"})
                for name in names
            )
        )

        assert [r.status_code for r in responses] == [201] * 40, _describe(responses)
        bodies = [r.json() for r in responses]
        expected = [f"METRIC-{n:03d}" for n in range(1, 41)]
        assert sorted(b["metric_id"] for b in bodies) == expected
        assert sorted(b["id"] for b in bodies) == list(range(1, 41))
        assert [b["name"] for b in bodies] == names
        assert {b["organization_id"] for b in bodies} == {org["organization_id"]}

        # What is stored agrees with what each caller was told.
        listed = await client.get("/customers/metrics", params={"limit": 200})
        assert listed.status_code == 200, listed.text
        stored = {m["metric_id"]: m["name"] for m in listed.json()["data"]}
        assert stored == {b["metric_id"]: b["name"] for b in bodies}
        fetched = await asyncio.gather(
            *(client.get(f"/customers/metrics/{b['metric_id']}") for b in bodies)
        )
        assert [(f.status_code, f.json()["name"]) for f in fetched] == [(200, n) for n in names]
