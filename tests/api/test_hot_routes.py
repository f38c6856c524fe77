"""Hot routes (api/hot.py) are matched ahead of the router, but every request still reaches
the route the router would choose, with the same answers and the same route label."""

from __future__ import annotations

import re

from tests.builders import create_metric, write_value


async def test_a_path_an_earlier_route_takes_still_goes_there(client):
    # GET /customers/metrics/metrics is both the metric with key "metrics" (the metrics
    # router, tried first) and the agent view of a customer called "metrics" (a hot route).
    metric = await create_metric(client, name="Metrics", data_type="NUMBER")
    assert metric["key"] == "metrics"
    answer = await client.get("/customers/metrics/metrics")
    assert answer.status_code == 200
    assert answer.json()["metric_id"] == metric["metric_id"]
    assert "usage" in answer.json()


async def test_hot_routes_answer_as_before_and_keep_their_route_label(client, anon):
    metric = await create_metric(client, name="Seats", data_type="INTEGER")
    ref = metric["metric_id"]
    written = await write_value(client, "acme", ref, value=7)
    assert written["value"] == 7
    view = await client.get("/customers/acme/metrics")
    assert view.status_code == 200
    assert [(v["key"], v["value"]) for v in view.json()["data"]] == [("seats", 7)]
    # The seed page's doubled path reaches the same route, with the same answer.
    doubled = await client.get("/external/v1/customers/acme/metrics")
    assert doubled.status_code == 200
    assert doubled.json() == view.json()
    batch = await client.post(
        "/customers/metrics/values",
        json={"values": [{"customer_id": "acme", "metric": ref, "value": 8}]},
    )
    assert batch.status_code == 200
    assert batch.json()["accepted"] == 1
    text = (await anon.get("/metrics")).text
    for route, method, status in [
        ("/customers/{customer_id}/metrics/{ref}/values", "POST", 201),
        ("/customers/{customer_id}/metrics", "GET", 200),
        ("/customers/metrics/values", "POST", 200),
    ]:
        pattern = rf'cm_http_requests_total\{{method="{method}",route="{re.escape(route)}",'
        assert re.search(pattern + rf'status="{status}"\}}', text), route


async def test_hot_routes_keep_their_errors_and_other_methods(client, anon):
    # Validation, auth and a method the path does not take: answered as by the router.
    metric = await create_metric(client, name="Plan", data_type="STRING")
    path = f"/customers/acme/metrics/{metric['metric_id']}/values"
    bad = await client.post(path, json={"value": "x", "bogus": 1})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "bogus"]
    unknown_field = await client.post("/customers/metrics", json={"name": "A", "bogus": 1})
    assert unknown_field.status_code == 422
    assert unknown_field.json()["detail"][0]["loc"][0] == "body"
    unauthenticated = await anon.get("/external/v1/customers/acme/metrics")
    assert unauthenticated.status_code == 401
    wrong_method = await client.put(path, json={"value": "x"})
    assert wrong_method.status_code == 405


async def test_authentication_still_comes_before_validation(anon, client):
    # FastAPI resolves the service (and so the key) before it validates the body.
    for path, body in [
        ("/external/v1/customers/metrics", {"name": "A", "bogus": 1}),
        ("/external/v1/customers/acme/metrics/METRIC-001/values", {"bogus": 1}),
        ("/external/v1/customers/metrics/values", {"values": "no"}),
    ]:
        answer = await anon.post(path, json=body)
        assert answer.status_code == 401, (path, answer.text)
    ref = (await create_metric(client, name="Logins", data_type="INTEGER"))["metric_id"]
    path = f"/customers/nobody/metrics/{ref}/values"
    unknown = await client.post(path + "?create_customer=false", json={"value": 1})
    assert unknown.status_code == 404
    assert (await client.get("/customers/nobody")).status_code == 404
    assert (await client.post(path + "?create_customer=true", json={"value": 1})).status_code == 201


async def test_plain_requests_skip_fastapis_dependency_solving(client, monkeypatch):
    # The point of the direct handler (its CPU): a plain request never reaches FastAPI's
    # `solve_dependencies`; one it does not handle (here: a query string) still does.
    import fastapi.routing

    calls: list[str] = []
    solve = fastapi.routing.solve_dependencies

    async def counted(*args, **kwargs):
        calls.append(kwargs["request"].url.path)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    ref = (await create_metric(client, name="Seats", data_type="INTEGER"))["metric_id"]
    await write_value(client, "acme", ref, value=3)
    assert (await client.get("/customers/acme/metrics")).status_code == 200
    assert calls == []
    assert (await client.get("/customers/acme/metrics?as_of=2099-01-01T00:00:00Z")).status_code
    assert calls
    assert set(calls) == {"/external/v1/customers/acme/metrics"}
