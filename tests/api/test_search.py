"""Segment search (contract §5): filters, sorts, includes, pagination, count."""

from __future__ import annotations

import pytest

from tests.builders import create_metric

URL = "/customers/search"


async def _seed(client):
    await create_metric(client, name="ARR")
    await create_metric(client, name="Plan", data_type="STRING")
    await create_metric(client, name="NPS", data_type="INTEGER")
    await create_metric(client, name="Active", data_type="BOOLEAN")
    data = {
        "acme": {"arr": 150000, "plan": "enterprise", "nps": 9, "active": True},
        "beta": {"arr": 90000, "plan": "enterprise", "nps": 4},
        "gamma": {"arr": 20000, "plan": "pro", "active": False},
        "delta": {"plan": "free"},
    }
    for customer, values in data.items():
        await client.put(
            f"/customers/{customer}", json={"name": customer.title(), "email": f"{customer}@x.io"}
        )
        for key, value in values.items():
            r = await client.post(
                f"/customers/{customer}/metrics/{key}/values", json={"value": value}
            )
            assert r.status_code == 201
    await client.put("/customers/empty", json={})
    return data


async def ids(client, body):
    response = await client.post(URL, json=body)
    assert response.status_code == 200, response.text
    return [hit["customer_id"] for hit in response.json()["data"]]


async def test_two_conditions_sorted_by_a_metric(client):
    await _seed(client)
    body = {
        "filter": {
            "and": [
                {"metric": "plan", "op": "eq", "value": "enterprise"},
                {"metric": "arr", "op": "gt", "value": 100000},
            ]
        },
        "sort": [{"metric": "arr", "direction": "desc"}],
        "include": ["arr", "plan", "nps", "active"],
    }
    response = await client.post(URL, json=body)
    assert response.json()["data"] == [
        {
            "customer_id": "acme",
            "name": "Acme",
            "email": "acme@x.io",
            "metrics": {"arr": 150000, "plan": "enterprise", "nps": 9, "active": True},
        },
    ]
    assert response.json()["next_cursor"] is None


async def test_missing_values_sort_last_both_ways(client):
    await _seed(client)
    asc = await ids(client, {"sort": [{"metric": "arr"}]})
    desc = await ids(client, {"sort": [{"metric": "arr", "direction": "desc"}]})
    assert asc == ["gamma", "beta", "acme", "delta", "empty"]
    assert desc == ["acme", "beta", "gamma", "delta", "empty"]


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"metric": "nps", "op": "exists"}, ["acme", "beta"]),
        ({"metric": "nps", "op": "not_exists"}, ["gamma", "delta", "empty"]),
        ({"not": {"metric": "arr", "op": "gte", "value": 90000}}, ["gamma", "delta", "empty"]),
        ({"metric": "arr", "op": "between", "value": [20000, 90000]}, ["beta", "gamma"]),
        ({"metric": "plan", "op": "in", "value": ["pro", "free"]}, ["gamma", "delta"]),
        ({"metric": "plan", "op": "not_in", "value": ["pro", "free"]}, ["acme", "beta"]),
        ({"metric": "plan", "op": "contains", "value": "terp"}, ["acme", "beta"]),
        ({"metric": "plan", "op": "starts_with", "value": "f"}, ["delta"]),
        ({"metric": "plan", "op": "starts_with", "value": "F"}, []),
        ({"metric": "active", "op": "eq", "value": False}, ["gamma"]),
        ({"metric": "arr", "op": "ne", "value": "90000"}, ["acme", "gamma"]),
        (
            {
                "or": [
                    {"metric": "nps", "op": "lt", "value": 5},
                    {"field": "customer_id", "op": "eq", "value": "delta"},
                ]
            },
            ["beta", "delta"],
        ),
        (
            {"field": "email", "op": "contains", "value": "@x.io"},
            ["acme", "beta", "gamma", "delta"],
        ),
        ({"field": "email", "op": "not_exists"}, ["empty"]),
        (
            {"field": "time_created", "op": "gt", "value": "2000-01-01T00:00:00Z"},
            ["acme", "beta", "gamma", "delta", "empty"],
        ),
        (
            {"metric": "arr", "op": "changed_since", "value": "2000-01-01T00:00:00Z"},
            ["acme", "beta", "gamma"],
        ),
        ({"metric": "arr", "op": "changed_since", "value": "2999-01-01T00:00:00Z"}, []),
    ],
)
async def test_operators(client, node, expected):
    await _seed(client)
    assert await ids(client, {"filter": node}) == expected


@pytest.mark.parametrize(
    ("node", "loc"),
    [
        ({"metric": "plan", "op": "gt", "value": 1}, ["body", "filter", "value"]),
        ({"metric": "arr", "op": "contains", "value": "1"}, ["body", "filter", "op"]),
        ({"metric": "active", "op": "lt", "value": True}, ["body", "filter", "op"]),
        ({"metric": "arr", "op": "eq", "value": True}, ["body", "filter", "value"]),
        ({"metric": "arr", "op": "eq"}, ["body", "filter", "value"]),
        ({"metric": "arr", "op": "exists", "value": 1}, ["body", "filter", "value"]),
        ({"metric": "arr", "op": "between", "value": [1]}, ["body", "filter", "value"]),
        ({"metric": "nope", "op": "exists"}, ["body", "filter", "metric"]),
        ({"metric": "arr", "op": "like", "value": 1}, ["body", "filter", "op"]),
        (
            {"and": [{"metric": "arr", "op": "gt", "value": "x"}]},
            ["body", "filter", "and", 0, "value"],
        ),
        ({"and": []}, ["body", "filter", "and"]),
        (
            {"not": {"or": [{"field": "nick", "op": "eq", "value": "x"}]}},
            ["body", "filter", "not", "or", 0, "field"],
        ),
        ({"metric": "arr", "field": "name", "op": "exists"}, ["body", "filter"]),
        ({"metric": "arr", "op": "exists", "extra": 1}, ["body", "filter", "extra"]),
        (
            {"field": "name", "op": "changed_since", "value": "2024-01-01T00:00:00Z"},
            ["body", "filter", "op"],
        ),
    ],
)
async def test_ill_typed_filters_are_422_at_the_leaf(client, node, loc):
    await _seed(client)
    response = await client.post(URL, json={"filter": node})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc


async def test_filter_depth_and_size_are_bounded(client):
    await _seed(client)
    node = {"metric": "arr", "op": "exists"}
    for _ in range(8):
        node = {"not": node}
    deep = await client.post(URL, json={"filter": node})
    assert deep.status_code == 422
    wide = {"or": [{"metric": "arr", "op": "exists"}] * 51}
    assert (await client.post(URL, json={"filter": wide})).status_code == 422
    ok = {"or": [{"metric": "arr", "op": "exists"}] * 50}
    assert (await client.post(URL, json={"filter": ok})).status_code == 200


async def test_pagination_walks_everything_once_with_count(client):
    await create_metric(client, name="Score", data_type="INTEGER")
    for i in range(23):
        await client.post(f"/customers/c{i:02d}/metrics/score/values", json={"value": i % 5})
    seen, cursor = [], None
    while True:
        body = {
            "sort": [{"metric": "score", "direction": "desc"}],
            "limit": 4,
            "count": True,
            **({"cursor": cursor} if cursor else {}),
        }
        page = (await client.post(URL, json=body)).json()
        assert page["count"] == 23
        seen += [h["customer_id"] for h in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == [f"c{i:02d}" for i in range(23)]
    assert len(seen) == 23


async def test_bad_cursor_is_422(client):
    await _seed(client)
    response = await client.post(URL, json={"cursor": "bm9wZQ"})
    assert response.status_code == 422


async def test_search_is_a_read_even_with_an_idempotency_key(client):
    await _seed(client)
    headers = {"Idempotency-Key": "search-1"}
    first = await client.post(URL, json={}, headers=headers)
    await client.put("/customers/late", json={})
    second = await client.post(URL, json={}, headers=headers)
    assert first.status_code == second.status_code == 200
    assert "idempotent-replayed" not in second.headers
    assert len(second.json()["data"]) == len(first.json()["data"]) + 1
