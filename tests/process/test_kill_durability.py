"""An acknowledged create survives `kill -9` of the server right after its 201.

Each round sends a small burst of creates and kills the server the moment the first 201
arrives: the server is then still busy with the others, which is when a write committed
after its response (rather than before) would be lost."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest

from tests.process.conftest import ServerProcess

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("process")]

ROUNDS = 5
BURST = 8
STABLE_FIELDS = (
    "id",
    "metric_id",
    "key",
    "name",
    "description",
    "data_type",
    "unit",
    "allowed_values",
    "archived",
    "organization_id",
    "time_created",
    "time_updated",
)


async def _create_burst_then_kill(
    server: ServerProcess, api_key: str, round_number: int
) -> list[dict[str, Any]]:
    """Returns every create the server acknowledged (201) before it died."""
    async with server.client(api_key) as client:
        tasks = [
            asyncio.ensure_future(
                client.post(
                    "/customers/metrics",
                    json={
                        "name": f"Round {round_number} metric {i}",
                        "data_type": "NUMBER",
                        "description": f"written just before kill -9 #{round_number}",
                        "unit": "USD",
                    },
                )
            )
            for i in range(BURST)
        ]
        for next_done in asyncio.as_completed(tasks):
            with contextlib.suppress(httpx.TransportError):
                if (await next_done).status_code == 201:
                    break
        server.kill()  # at once, before anything else runs in this process
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    answered = [o for o in outcomes if isinstance(o, httpx.Response)]
    assert [r.status_code for r in answered] == [201] * len(answered), [r.text for r in answered]
    assert answered, f"no create was acknowledged: {outcomes}"
    unanswered = [o for o in outcomes if not isinstance(o, httpx.Response)]
    assert all(isinstance(o, httpx.TransportError) for o in unanswered), unanswered
    return [r.json() for r in answered]


async def test_acknowledged_creates_survive_sigkill_and_restart(server: ServerProcess):
    org = server.create_org("Kill nine")
    acknowledged: list[dict[str, Any]] = []

    for round_number in range(1, ROUNDS + 1):
        acknowledged += await _create_burst_then_kill(server, org["api_key"], round_number)
        with pytest.raises(httpx.TransportError):
            httpx.get(server.base_url + "/healthz", timeout=2.0)

        server.start()
        async with server.client(org["api_key"]) as client:
            for before in acknowledged:
                after = await client.get(f"/customers/metrics/{before['metric_id']}")
                assert after.status_code == 200, (before, after.text)
                assert {f: after.json()[f] for f in STABLE_FIELDS} == {
                    f: before[f] for f in STABLE_FIELDS
                }
            listed = await client.get("/customers/metrics", params={"limit": 200})
        assert listed.status_code == 200, listed.text
        stored = [m["metric_id"] for m in listed.json()["data"]]
        # Creates cut off by the kill were rolled back whole, numbers included: no gaps.
        assert stored == [f"METRIC-{n:03d}" for n in range(1, len(stored) + 1)]
        assert {m["metric_id"] for m in acknowledged} <= set(stored)
