"""Operational surface: health, readiness, Prometheus, OpenAPI, request ids, unknown routes."""

from __future__ import annotations

import pytest


async def test_healthz_and_readyz_need_no_key(anon):
    assert (await anon.get("/healthz")).json() == {"status": "ok"}
    ready = await anon.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_prometheus_metrics_count_requests_by_route_and_status(anon, client):
    await client.get("/customers/metrics")
    await client.get("/customers/metrics/METRIC-404")
    text = (await anon.get("/metrics")).text
    assert 'cm_http_requests_total{method="GET",route="/customers/metrics",status="200"}' in text
    assert 'route="/customers/metrics/{ref}",status="404"' in text
    assert "cm_http_request_duration_seconds_bucket" in text


async def test_openapi_describes_every_public_route(anon):
    document = (await anon.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths["/external/v1/customers/metrics"]) == {"get", "post"}
    assert set(paths["/external/v1/customers/metrics/{ref}"]) == {"get", "patch", "delete"}
    assert (await anon.get("/docs")).status_code == 200


async def test_request_id_is_echoed_when_sane_and_generated_otherwise(client):
    echoed = await client.get("/customers/metrics", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await client.get("/customers/metrics", headers={"X-Request-ID": "bad id\t!"})
    assert generated.headers["x-request-id"] not in ("", "bad id\t!")
    plain = await client.get("/customers/metrics")
    assert len(plain.headers["x-request-id"]) >= 16


async def test_error_responses_carry_a_request_id(client, anon):
    assert "x-request-id" in (await anon.get("/external/v1/customers/metrics")).headers
    assert "x-request-id" in (await client.post("/customers/metrics", json={})).headers


async def test_log_lines_carry_the_request_id(client, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="customer_metrics")
    logger = logging.getLogger("customer_metrics.test")
    from customer_metrics.api.observability import RequestIdFilter, request_id_var

    token = request_id_var.set("req-42")
    try:
        record = logger.makeRecord("customer_metrics.test", logging.INFO, "f", 1, "m", None, None)
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    assert record.request_id == "req-42"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("PUT", "/external/v1/customers/metrics/METRIC-001", 405, "method_not_allowed"),
    ],
)
async def test_unknown_routes_and_methods_use_the_error_shape(anon, method, path, status, code):
    response = await anon.request(method, path)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert set(response.json()) == {"detail", "code"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/external/v1/customers/metrics", "GET, POST"),
        ("PUT", "/external/v1/customers/metrics/values", "POST"),
        ("PUT", "/external/v1/customers/metrics/METRIC-001", "DELETE, GET, PATCH"),
        ("POST", "/external/v1/customers/acme", "DELETE, GET, PATCH, PUT"),
        ("PATCH", "/external/v1/customers/acme/metrics/arr/values", "DELETE, GET, POST"),
        ("OPTIONS", "/external/v1/external/v1/customers/metrics", "GET, POST"),
        ("POST", "/healthz", "GET"),
    ],
)
async def test_405_allow_lists_every_method_of_the_resource(anon, method, path, allow):
    response = await anon.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow


async def test_streamed_body_over_the_limit_is_413(client, app):
    limit = app.state.settings.max_body_bytes

    async def chunks():
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    response = await client.post(
        "/customers/metrics", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_timestamps_have_milliseconds_and_z(client):
    from tests.api.test_seed import TIMESTAMP

    body = (await client.post("/customers/metrics", json={"name": "T", "data_type": "DATE"})).json()
    assert TIMESTAMP.match(body["time_created"])
    assert TIMESTAMP.match(body["time_updated"])


async def test_prometheus_counts_ingested_values(anon, client):
    await client.post("/customers/metrics", json={"name": "ARR", "data_type": "NUMBER"})
    before = _ingested((await anon.get("/metrics")).text)
    await client.post("/customers/acme/metrics/arr/values", json={"value": 1})
    await client.post("/customers/acme/metrics/arr/values", json={"value": "bad"})
    assert _ingested((await anon.get("/metrics")).text) == before + 1


def _ingested(text: str) -> float:
    for line in text.splitlines():
        if line.startswith('cm_values_ingested_total{path="single"}'):
            return float(line.split()[-1])
    return 0.0


def _count(text: str, method: str, status: int) -> float:
    line = (
        f'cm_http_requests_total{{method="{method}",route="/customers/metrics",status="{status}"}}'
    )
    found = [ln for ln in text.splitlines() if ln.startswith(line + " ")]
    return float(found[0].split()[-1]) if found else 0.0


async def test_an_unexpected_error_is_a_bare_500_on_hot_and_other_routes(
    client, anon, monkeypatch, caplog
):
    """A hot route (matched ahead of FastAPI's stack) and any other route answer an error
    nothing handled alike, byte for byte and header for header: the contract's bare 500, or
    503 with Retry-After when the database connection was lost; with the request id;
    logged once; counted."""
    from sqlalchemy.exc import DBAPIError

    from customer_metrics.metrics.service import MetricService

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("do not show this")

    def lose(*args: object, **kwargs: object) -> None:
        raise DBAPIError("SELECT 1", {}, OSError("gone"), connection_invalidated=True)

    caplog.set_level("WARNING", logger="customer_metrics.http")
    for failure, status, body in [
        (fail, 500, {"detail": "Internal server error", "code": "internal_error"}),
        (
            lose,
            503,
            {"detail": "The database connection was lost; retry shortly.", "code": "unavailable"},
        ),
    ]:
        monkeypatch.setattr(MetricService, "create", failure)  # POST /customers/metrics: hot
        monkeypatch.setattr(MetricService, "list_page", failure)  # GET /customers/metrics: not
        before = (await anon.get("/metrics")).text
        caplog.clear()
        answers = [
            await client.post("/customers/metrics", json={"name": "Seats", "data_type": "NUMBER"}),
            await client.get("/customers/metrics"),
        ]
        for answer in answers:
            assert answer.status_code == status
            assert answer.json() == body
            assert answer.headers["content-type"] == "application/json"
            assert answer.headers["content-length"] == str(len(answer.content))
            assert answer.headers.get("retry-after") == ("1" if status == 503 else None)
            assert len(answer.headers["x-request-id"]) == 32
            assert "do not show this" not in answer.text
        hot, other = answers
        assert hot.content == other.content
        assert sorted(hot.headers) == sorted(other.headers)
        logged = [r.getMessage() for r in caplog.records if " on " in r.getMessage()]
        assert [m.split(":")[0] for m in logged] == [
            f"{'unhandled error' if status == 500 else 'database connection lost'} on {m} "
            "/external/v1/customers/metrics"
            for m in ("POST", "GET")
        ]
        after = (await anon.get("/metrics")).text
        for method in ("POST", "GET"):
            assert _count(after, method, status) == _count(before, method, status) + 1


async def test_the_first_request_id_sent_is_the_one_echoed(client):
    headers = [("X-Request-ID", "first-id"), ("X-Request-ID", "second-id")]
    for answer in (
        await client.get("/customers/metrics", headers=headers),
        await client.post(
            "/customers/metrics", json={"name": "Rid", "data_type": "NUMBER"}, headers=headers
        ),
    ):
        assert answer.headers["x-request-id"] == "first-id"
