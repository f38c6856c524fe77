"""Metric values (contract §3): typed, exact, historical, with a current value."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from customer_metrics.api.responses import loads_exact, render_exact
from tests.builders import create_metric, create_org, current_values, write_value
from tests.conftest import api_client


def _iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


async def _raw_write(client, customer_id, ref, raw: str):
    return await client.post(
        f"/customers/{customer_id}/metrics/{ref}/values",
        content=raw.encode(),
        headers={"content-type": "application/json"},
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12345678901234567890.12", "12345678901234567890.12"),
        ("0.1", "0.1"),
        ("1234.50", "1234.50"),
        ('"1234.50"', "1234.50"),
        ("-0.000001", "-0.000001"),
        ("1e5", "100000"),
        ("1.5E-3", "0.0015"),
        ("-0", "0"),
        ("42", "42"),
        ("99999999999999999999999999999999999999", "99999999999999999999999999999999999999"),
    ],
)
async def test_numbers_come_back_with_exactly_the_same_digits(client, raw, expected):
    await create_metric(client, name="ARR")
    response = await _raw_write(client, "acme", "arr", f'{{"value": {raw}}}')
    assert response.status_code == 201, response.text
    assert f'"value":{expected},' in response.text
    view = (await client.get("/customers/acme/metrics")).text
    assert f'"value":{expected},' in view
    history = (await client.get("/customers/acme/metrics/arr/values")).text
    assert f'"value":{expected},' in history


@pytest.mark.parametrize(
    ("data_type", "value", "expected"),
    [
        ("INTEGER", 9223372036854775807, 9223372036854775807),
        ("INTEGER", -9223372036854775808, -9223372036854775808),
        ("STRING", "  Enterprise plan ", "  Enterprise plan "),
        ("STRING", "x" * 1000, "x" * 1000),
        ("BOOLEAN", False, False),
        ("DATE", "2024-02-29", "2024-02-29"),
        ("DATETIME", "2024-03-01T12:00:00.123456+02:00", "2024-03-01T10:00:00.123Z"),
        ("DATETIME", "2024-03-01T12:00:00Z", "2024-03-01T12:00:00.000Z"),
    ],
)
async def test_each_data_type_round_trips(client, data_type, value, expected):
    await create_metric(client, name="M", data_type=data_type)
    written = await write_value(client, "acme", "m", value=value)
    assert written["value"] == expected
    assert (await current_values(client, "acme"))["m"] == expected


INVALID = [
    ("NUMBER", "NaN"),
    ("NUMBER", "Infinity"),
    ("NUMBER", "-Infinity"),
    ("NUMBER", "1e400"),
    ("NUMBER", "true"),
    ("NUMBER", '"12abc"'),
    ("NUMBER", '"NaN"'),
    ("NUMBER", '"1e5"'),
    ("NUMBER", "123456789012345678901234567890123456789"),
    ("NUMBER", "0.000000000000000000000000000000000000001"),
    ("NUMBER", "null"),
    ("NUMBER", "[1]"),
    ("INTEGER", "1.5"),
    ("INTEGER", "1.0"),
    ("INTEGER", "1e3"),
    ("INTEGER", '"12"'),
    ("INTEGER", "true"),
    ("INTEGER", "9223372036854775808"),
    ("INTEGER", "-9223372036854775809"),
    ("STRING", "12"),
    ("STRING", '"a\\u0000b"'),
    ("STRING", '"\\ud800"'),
    ("STRING", '"' + "x" * 1001 + '"'),
    ("BOOLEAN", "1"),
    ("BOOLEAN", '"true"'),
    ("DATE", '"2024-02-30"'),
    ("DATE", '"2024-2-3"'),
    ("DATE", '"2024-02-03T00:00:00Z"'),
    ("DATETIME", '"2024-03-01T12:00:00"'),
    ("DATETIME", '"2024-03-01"'),
    ("DATETIME", '"0001-01-01T00:00:00+01:00"'),
    ("DATETIME", "1700000000"),
]


@pytest.mark.parametrize(("data_type", "raw"), INVALID)
async def test_invalid_values_are_422_and_store_nothing(client, data_type, raw):
    await create_metric(client, name="M", data_type=data_type)
    response = await _raw_write(client, "acme", "m", f'{{"value": {raw}}}')
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "body"
    assert (await client.get("/customers/acme")).status_code == 404  # not even the customer
    assert (await client.get("/customers/metrics/m")).json()["usage"]["values"] == 0


async def test_allowed_values_are_enforced(client):
    await create_metric(client, name="Plan", data_type="STRING", allowed_values=["free", "pro"])
    await write_value(client, "acme", "plan", value="pro")
    response = await client.post("/customers/acme/metrics/plan/values", json={"value": "gold"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "enum"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "value"]),
        ({"value": 1, "extra": 2}, ["body", "extra"]),
        ({"value": 1, "observed_at": "2024-01-01T00:00:00"}, ["body", "observed_at"]),
        ({"value": 1, "observed_at": "yesterday"}, ["body", "observed_at"]),
        ({"value": 1, "source": "s" * 101}, ["body", "source"]),
        ({"value": 1, "source": 5}, ["body", "source"]),
        ({"increment": 1, "observed_at": "2024-01-01T00:00:00Z"}, ["body", "observed_at"]),
        ({"increment": 1, "value": 2}, ["body", "value"]),
        ({"increment": "1"}, ["body", "increment"]),
        ({"increment": True}, ["body", "increment"]),
    ],
)
async def test_invalid_write_bodies(client, body, loc):
    await create_metric(client, name="ARR")
    response = await client.post("/customers/acme/metrics/arr/values", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc


async def test_observed_at_up_to_five_minutes_ahead_and_no_further(client):
    await create_metric(client, name="ARR")
    now = datetime.now(UTC)
    await write_value(client, "acme", "arr", value=1, observed_at=_iso(now + timedelta(minutes=4)))
    response = await client.post(
        "/customers/acme/metrics/arr/values",
        json={"value": 2, "observed_at": _iso(now + timedelta(minutes=6))},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "datetime_future"


async def test_current_value_is_the_latest_observed_not_the_latest_written(client):
    await create_metric(client, name="ARR")
    await write_value(client, "acme", "arr", value=300, observed_at="2024-03-01T00:00:00Z")
    await write_value(client, "acme", "arr", value=100, observed_at="2024-01-01T00:00:00Z")
    assert (await current_values(client, "acme"))["arr"] == 300
    await write_value(client, "acme", "arr", value=400, observed_at="2024-04-01T00:00:00Z")
    assert (await current_values(client, "acme"))["arr"] == 400


async def test_same_observed_at_replaces_the_observation(client):
    await create_metric(client, name="ARR")
    await write_value(
        client, "acme", "arr", value=1, observed_at="2024-01-01T00:00:00Z", source="a"
    )
    await write_value(
        client, "acme", "arr", value=2, observed_at="2024-01-01T00:00:00.000+00:00", source="b"
    )
    history = (await client.get("/customers/acme/metrics/arr/values")).json()["data"]
    assert [(h["value"], h["source"]) for h in history] == [(2, "b")]
    assert (await current_values(client, "acme"))["arr"] == 2


async def test_observation_shape(client):
    metric = await create_metric(client, name="Seats", data_type="INTEGER")
    written = await write_value(
        client, "acme", "seats", value=5, observed_at="2024-01-01T00:00:00Z", source="billing"
    )
    assert set(written) == {
        "customer_id",
        "metric_id",
        "key",
        "value",
        "observed_at",
        "recorded_at",
        "source",
    }
    assert (written["customer_id"], written["metric_id"], written["key"]) == (
        "acme",
        metric["metric_id"],
        "seats",
    )
    assert written["observed_at"] == "2024-01-01T00:00:00.000Z"
    assert written["recorded_at"] > written["observed_at"]


async def test_agent_view_lists_current_values_of_non_archived_metrics(client):
    await create_metric(client, name="ARR", unit="USD")
    await create_metric(client, name="Plan", data_type="STRING")
    old = await create_metric(client, name="Old")
    await create_metric(client, name="Unused")
    await write_value(client, "acme", "arr", value=100)
    await write_value(client, "acme", "plan", value="pro")
    await write_value(client, "acme", "old", value=1)
    await client.patch(f"/customers/metrics/{old['key']}", json={"archived": True})
    body = (await client.get("/customers/acme/metrics")).json()
    assert [row["key"] for row in body["data"]] == ["arr", "plan"]
    first = body["data"][0]
    assert set(first) == {"metric_id", "key", "name", "data_type", "unit", "value", "observed_at"}
    assert (first["name"], first["unit"], first["data_type"]) == ("ARR", "USD", "NUMBER")


async def test_agent_view_for_customer_without_values_is_empty_and_unknown_is_404(client):
    await client.put("/customers/quiet", json={})
    assert (await client.get("/customers/quiet/metrics")).json() == {"data": []}
    missing = await client.get("/customers/nobody/metrics")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


async def test_agent_view_as_of(client):
    await create_metric(client, name="ARR")
    await create_metric(client, name="Seats", data_type="INTEGER")
    await write_value(client, "acme", "arr", value=100, observed_at="2024-01-01T00:00:00Z")
    await write_value(client, "acme", "arr", value=200, observed_at="2024-02-01T00:00:00Z")
    await write_value(client, "acme", "seats", value=5, observed_at="2024-01-15T00:00:00Z")
    assert await current_values(client, "acme", as_of="2023-12-31T00:00:00Z") == {}
    assert await current_values(client, "acme", as_of="2024-01-01T00:00:00Z") == {"arr": 100}
    assert await current_values(client, "acme", as_of="2024-01-20T00:00:00+01:00") == {
        "arr": 100,
        "seats": 5,
    }
    assert await current_values(client, "acme", as_of="2024-03-01T00:00:00Z") == {
        "arr": 200,
        "seats": 5,
    }
    bad = await client.get("/customers/acme/metrics", params={"as_of": "2024-01-01"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "as_of"]


async def test_history_newest_first_with_half_open_range_and_cursor(client):
    await create_metric(client, name="ARR")
    for day in range(1, 8):
        await write_value(client, "acme", "arr", value=day, observed_at=f"2024-01-0{day}T00:00:00Z")
    url = "/customers/acme/metrics/arr/values"
    page = (
        await client.get(url, params={"from": "2024-01-02T00:00:00Z", "to": "2024-01-06T00:00:00Z"})
    ).json()
    assert [h["value"] for h in page["data"]] == [5, 4, 3, 2]
    values, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await client.get(url, params=params)).json()
        values += [h["value"] for h in body["data"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert values == [7, 6, 5, 4, 3, 2, 1]
    assert (await client.get(url, params={"cursor": "garbage!"})).status_code == 422


async def test_delete_range_recomputes_the_current_value(client):
    await create_metric(client, name="ARR")
    for day in range(1, 6):
        await write_value(client, "acme", "arr", value=day, observed_at=f"2024-01-0{day}T00:00:00Z")
    url = "/customers/acme/metrics/arr/values"
    deleted = await client.delete(url, params={"from": "2024-01-04T00:00:00Z"})
    assert deleted.json() == {"deleted": 2}
    assert (await current_values(client, "acme"))["arr"] == 3
    deleted = await client.delete(url, params={"to": "2024-01-02T00:00:00Z"})
    assert deleted.json() == {"deleted": 1}
    assert [h["value"] for h in (await client.get(url)).json()["data"]] == [3, 2]
    assert (await client.delete(url)).json() == {"deleted": 2}
    assert await current_values(client, "acme") == {}
    assert (await client.delete(url)).json() == {"deleted": 0}


async def test_unknown_customer_is_created_on_write_unless_told_not_to(client):
    await create_metric(client, name="ARR")
    refused = await client.post(
        "/customers/newco/metrics/arr/values?create_customer=false", json={"value": 1}
    )
    assert refused.status_code == 404
    assert (await client.get("/customers/newco")).status_code == 404
    await write_value(client, "newco", "arr", value=1)
    assert (await client.get("/customers/newco")).json()["customer_id"] == "newco"


async def test_archived_metric_refuses_values_but_keeps_history(client):
    metric = await create_metric(client, name="ARR")
    await write_value(client, "acme", "arr", value=1, observed_at="2024-01-01T00:00:00Z")
    await client.patch(f"/customers/metrics/{metric['key']}", json={"archived": True})
    response = await client.post("/customers/acme/metrics/arr/values", json={"value": 2})
    assert response.status_code == 409
    assert response.json()["code"] == "metric_archived"
    assert [
        h["value"] for h in (await client.get("/customers/acme/metrics/arr/values")).json()["data"]
    ] == [1]


async def test_increments_add_to_the_current_value(client):
    await create_metric(client, name="Logins", data_type="INTEGER")
    await create_metric(client, name="Spend")
    assert (await write_value(client, "acme", "logins", increment=1))["value"] == 1
    assert (await write_value(client, "acme", "logins", increment=5))["value"] == 6
    assert (await write_value(client, "acme", "logins", increment=-2))["value"] == 4
    assert (await write_value(client, "acme", "spend", increment=0.1))["value"] == 0.1
    response = await client.post("/customers/acme/metrics/spend/values", json={"increment": 0.2})
    assert '"value":0.3,' in response.text
    await write_value(client, "acme", "logins", value=9223372036854775807)
    overflow = await client.post("/customers/acme/metrics/logins/values", json={"increment": 1})
    assert overflow.status_code == 422
    assert (await current_values(client, "acme"))["logins"] == 9223372036854775807


async def test_increment_is_only_for_numeric_metrics(client):
    await create_metric(client, name="Plan", data_type="STRING")
    response = await client.post("/customers/acme/metrics/plan/values", json={"increment": 1})
    assert response.status_code == 422


async def test_many_increments_at_once_lose_nothing(client):
    import asyncio

    await create_metric(client, name="Logins", data_type="INTEGER")
    results = await asyncio.gather(
        *(
            client.post("/customers/acme/metrics/logins/values", json={"increment": 1})
            for _ in range(20)
        )
    )
    assert [r.status_code for r in results] == [201] * 20
    assert (await current_values(client, "acme"))["logins"] == 20


async def test_definition_rules_that_depend_on_values(client):
    metric = await create_metric(
        client, name="Plan", data_type="STRING", allowed_values=["a", "b", "c"]
    )
    ref = f"/customers/metrics/{metric['key']}"
    await write_value(client, "acme", "plan", value="a", observed_at="2024-01-01T00:00:00Z")
    await write_value(client, "beta", "plan", value="b")

    locked = await client.patch(ref, json={"data_type": "NUMBER", "allowed_values": None})
    assert locked.status_code == 409
    assert locked.json()["code"] == "metric_in_use"
    removing = await client.patch(ref, json={"allowed_values": ["b", "c"]})
    assert removing.status_code == 409
    assert "'a'" in removing.json()["detail"]
    assert (await client.patch(ref, json={"allowed_values": ["a", "b", "d"]})).status_code == 200

    usage = (await client.get(ref)).json()["usage"]
    assert usage["customers"] == 2
    assert usage["values"] == 2
    assert usage["last_value_at"] > "2024-01-01T00:00:00.000Z"

    refused = await client.delete(ref)
    assert refused.status_code == 409
    assert refused.json()["code"] == "metric_in_use"
    assert (await client.delete(ref, params={"cascade": "true"})).status_code == 204
    assert (await client.get(ref)).status_code == 404
    assert await current_values(client, "acme") == {}
    assert (await client.get("/customers/acme")).status_code == 200  # customers stay


async def test_every_value_route_is_404_for_another_organization(app, client):
    await create_metric(client, name="ARR")
    await write_value(client, "acme", "arr", value=1)
    intruder = await create_org(app)
    async with api_client(app, intruder.api_key) as other:
        await create_metric(other, name="ARR")  # same key in their own organization
        answers = [
            await other.get("/customers/acme/metrics"),
            await other.get("/customers/acme/metrics/arr/values"),
            await other.delete("/customers/acme/metrics/arr/values"),
            await other.post("/customers/acme/metrics/METRIC-002/values", json={"value": 1}),
        ]
    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert (await current_values(client, "acme")) == {"arr": 1}


async def test_exact_decimal_storage_survives_json_parsing_of_floats(client):
    await create_metric(client, name="ARR")
    body = json.dumps({"value": 0.1})
    response = await _raw_write(client, "acme", "arr", body)
    assert '"value":0.1,' in response.text


async def test_the_agent_view_renders_every_type_byte_for_byte_like_every_other_answer(client):
    """PostgreSQL renders the agent view's JSON itself; its bytes must be what the service's
    own renderer (orjson, exact decimals) gives for the same rows on either backend."""
    odd = 'Tier "gold" \\ é 😀 </script> \u2028'
    writes = [
        ({"name": "ARR", "unit": "USD"}, 12345678901234567890.12, "12345678901234567890.12"),
        ({"name": "Small", "data_type": "NUMBER"}, None, "-0.000100"),
        ({"name": "Seats", "data_type": "INTEGER"}, -9223372036854775808, None),
        ({"name": odd, "data_type": "STRING", "unit": odd}, 'a "b"\\c\n\r\td\u2029é😀', None),
        ({"name": "Active", "data_type": "BOOLEAN"}, False, None),
        ({"name": "Renewal", "data_type": "DATE"}, "2027-02-28", None),
        ({"name": "Last login", "data_type": "DATETIME"}, "2026-01-02T03:04:05.678901+02:00", None),
        # PostgreSQL holds Python's smallest and largest dates as -infinity and infinity
        ({"name": "First day", "data_type": "DATE"}, "0001-01-01", None),
        ({"name": "Last day", "data_type": "DATE"}, "9999-12-31", None),
        ({"name": "Dawn", "data_type": "DATETIME"}, "0001-01-01T00:00:00Z", None),
    ]
    expected = []
    for fields, value, raw in writes:
        metric = await create_metric(client, **fields)
        if raw is None:
            response = await client.post(
                f"/customers/acme/metrics/{metric['key']}/values", json={"value": value}
            )
        else:
            response = await _raw_write(client, "acme", metric["key"], f'{{"value": {raw}}}')
        assert response.status_code == 201, response.text
        written = loads_exact(response.text)
        expected.append(
            {
                "metric_id": metric["metric_id"],
                "key": metric["key"],
                "name": metric["name"],
                "data_type": metric["data_type"],
                "unit": metric["unit"],
                "value": written["value"],
                "observed_at": written["observed_at"],
            }
        )
    view = await client.get("/customers/acme/metrics")
    assert view.status_code == 200
    assert view.headers["content-type"] == "application/json"
    assert view.content == render_exact({"data": expected})
    assert json.loads(view.content)["data"][3]["value"] == 'a "b"\\c\n\r\td\u2029é😀'


async def test_a_customer_without_values_has_an_empty_view_and_an_unknown_one_is_a_404(client):
    await create_metric(client, name="ARR")
    assert (await client.put("/customers/quiet", json={})).status_code == 201
    view = await client.get("/customers/quiet/metrics")
    assert (view.status_code, view.content) == (200, b'{"data":[]}')
    assert (await client.get("/customers/nobody/metrics")).status_code == 404
