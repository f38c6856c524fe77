"""An acknowledged create survives `kill -9` of the server right after the 201."""

from __future__ import annotations

import httpx
import pytest

from tests.process.conftest import ServerProcess

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("process")]

ROUNDS = 3
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


async def test_acknowledged_create_survives_sigkill_and_restart(server: ServerProcess):
    org = server.create_org("Kill nine")
    acknowledged: list[dict[str, object]] = []

    for round_number in range(1, ROUNDS + 1):
        async with server.client(org["api_key"]) as client:
            response = await client.post(
                "/customers/metrics",
                json={
                    "name": f"Durable metric {round_number}",
                    "data_type": "NUMBER",
                    "description": f"written just before kill -9 #{round_number}",
                    "unit": "USD",
                },
            )
            server.kill()  # at once: no graceful shutdown, no code after the response
        assert response.status_code == 201, response.text
        acknowledged.append(response.json())
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
            listed = await client.get("/customers/metrics")
            assert listed.status_code == 200, listed.text
            assert [m["metric_id"] for m in listed.json()["data"]] == [
                m["metric_id"] for m in acknowledged
            ]

    assert [m["metric_id"] for m in acknowledged] == ["METRIC-001", "METRIC-002", "METRIC-003"]
