"""An API key sent where it does not belong is never echoed back, logged or stored.

Every test client here (and everywhere in the suite) fails a request whose answer carries a
key the session made, and the session's database is searched for every key at the end
(`tests/leaks.py`); these tests send keys to the places a careless client might put them and
check what the service makes of them: the key cut down to its prefix, which identifies it in
lists and logs."""

from __future__ import annotations

import logging

import pytest

from customer_metrics.api.observability import RedactingFormatter
from customer_metrics.api_keys.secrets import display_prefix
from tests.builders import create_metric
from tests.conftest import api_client


def _redacted(key: str) -> str:
    return display_prefix(key) + "[redacted]"


async def test_a_key_in_a_body_field_is_not_echoed_by_the_422(client, org):
    response = await client.post(
        "/customers/metrics", json={"name": "Seats", "data_type": "NUMBER", "api_key": org.api_key}
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert (error["type"], error["loc"]) == ("extra_forbidden", ["body", "api_key"])
    assert error["input"] == _redacted(org.api_key)


async def test_a_key_as_a_wrongly_typed_value_is_not_echoed(client, org):
    await create_metric(client, name="Seats", data_type="INTEGER")
    response = await client.post(
        "/customers/acme/metrics/seats/values", json={"value": 1, "source": 7, "x": org.api_key}
    )
    assert response.status_code == 422, response.text
    assert _redacted(org.api_key) in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/customers/{key}/metrics",
        "/customers/metrics/{key}",
        "/customers/acme/metrics/{key}/values",
    ],
)
async def test_a_key_in_a_path_is_not_quoted_by_the_404(client, org, path):
    response = await client.get(path.format(key=org.api_key))
    assert response.status_code == 404, response.text
    assert _redacted(org.api_key) in response.json()["detail"]


async def test_a_key_as_a_batch_items_metric_is_not_echoed_nor_stored_for_replay(client, org):
    body = {"values": [{"customer_id": "acme", "metric": org.api_key, "value": 1}]}
    headers = {"Idempotency-Key": "secrets-batch"}
    first = await client.post("/customers/metrics/values", json=body, headers=headers)
    replay = await client.post("/customers/metrics/values", json=body, headers=headers)
    assert first.status_code == replay.status_code == 200, first.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert first.content == replay.content  # the stored answer (searched at session end)
    [error] = first.json()["errors"][0]["detail"]
    assert error["msg"] == f"No metric '{_redacted(org.api_key)}' in this organization"


async def test_a_key_sent_as_request_id_is_replaced_not_echoed(app, org):
    async with api_client(app, org.api_key) as client:
        response = await client.get("/customers/metrics", headers={"X-Request-ID": org.api_key})
        kept = await client.get("/customers/metrics", headers={"X-Request-ID": "cm_not-a-key"})
    assert response.status_code == 200
    assert len(response.headers["x-request-id"]) == 32  # a new one
    assert kept.headers["x-request-id"] == "cm_not-a-key"


def test_log_lines_have_keys_cut_to_their_prefix(org):
    formatter = RedactingFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord(
        "x", logging.WARNING, "f", 1, "GET /?api_key=%s", (org.api_key,), None
    )
    assert formatter.format(record) == f"GET /?api_key={_redacted(org.api_key)}"
