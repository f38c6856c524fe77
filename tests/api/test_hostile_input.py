"""Input a hostile client can send anywhere: never a 500, always the contract's 4xx."""

from __future__ import annotations

import base64
import json

import pytest

from tests.builders import create_metric

NUL = "a\x00b"


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


REQUESTS = [
    ("GET", "/customers/a%00b", None, None),
    ("GET", "/customers/a%00b/metrics", None, None),
    ("GET", "/customers/a%00b/metrics", {"as_of": "2024-01-01T00:00:00Z"}, None),
    ("GET", "/customers/a%00b/metrics/arr/values", None, None),
    ("DELETE", "/customers/a%00b", None, None),
    ("PUT", "/customers/a%00b", None, {}),
    ("POST", "/customers/a%00b/metrics/arr/values", None, {"value": 1}),
    ("GET", "/customers", {"q": NUL}, None),
    ("GET", "/customers/metrics", {"q": NUL}, None),
    ("GET", "/customers", {"cursor": _cursor(2**64)}, None),
    ("GET", "/customers/metrics", {"cursor": _cursor(-1)}, None),
    ("GET", "/customers/metrics/99999999999999999999", None, None),
    ("POST", "/customers/search", None, {"filter": {"field": "name", "op": "eq", "value": NUL}}),
    (
        "POST",
        "/customers/search",
        None,
        {"filter": {"metric": "plan", "op": "contains", "value": NUL}},
    ),
    ("POST", "/customers/search", None, {"filter": {"metric": "plan", "op": "eq", "value": NUL}}),
    ("POST", "/customers/search", None, {"cursor": _cursor([2**70])}),
    ("POST", "/customers/search", None, {"sort": [{"metric": "arr"}], "cursor": _cursor(["x", 1])}),
    (
        "POST",
        "/customers/search",
        None,
        {"sort": [{"metric": "plan"}], "cursor": _cursor([NUL, 1])},
    ),
    (
        "POST",
        "/customers/search",
        None,
        {"sort": [{"metric": "seats"}], "cursor": _cursor([2**64, 1])},
    ),
    (
        "GET",
        "/customers/metrics/arr/series",
        {"from": "0001-01-01T00:00:00Z", "to": "0001-01-03T00:00:00Z", "tz": "America/New_York"},
        None,
    ),
    (
        "GET",
        "/customers/metrics/arr/series",
        {
            "from": "9999-12-30T00:00:00Z",
            "to": "9999-12-31T23:00:00Z",
            "tz": "Asia/Tokyo",
            "interval": "month",
        },
        None,
    ),
    ("GET", "/customers/metrics/arr/summary", {"as_of": "0001-01-01T00:00:00+01:00"}, None),
    (
        "POST",
        "/customers/metrics/values",
        None,
        {"values": [{"customer_id": NUL, "metric": "arr", "value": 1}]},
    ),
    (
        "POST",
        "/customers/metrics/values",
        None,
        {"values": [{"customer_id": "a", "metric": NUL, "value": 1}]},
    ),
]


@pytest.mark.parametrize(("method", "path", "params", "body"), REQUESTS)
async def test_no_hostile_request_is_a_server_error(client, method, path, params, body):
    await create_metric(client, name="ARR")
    await create_metric(client, name="Plan", data_type="STRING")
    await create_metric(client, name="Seats", data_type="INTEGER")
    response = await client.request(method, path, params=params, json=body)
    if path == "/customers/metrics/values":  # a batch reports bad items, it does not fail
        assert response.status_code == 200
        assert response.json()["rejected"] == 1
        return
    assert 400 <= response.status_code < 500, response.text
    payload = response.json()
    assert "detail" in payload
    if response.status_code != 422:
        assert set(payload) == {"detail", "code"}
