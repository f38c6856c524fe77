"""Rate limits per API key: 429 `rate_limited` with Retry-After and the RateLimit fields, no
write behind a refused request, one bucket per key, refills, and a Redis that cannot be
reached. (Several workers and several servers: tests/process/test_rate_limits.py.)"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from customer_metrics.main import create_app
from tests.builders import create_org, issue_key
from tests.conftest import Backend, api_client


@asynccontextmanager
async def limited_app(backend: Backend, **settings: Any) -> AsyncIterator[Any]:
    app = create_app(backend.settings.model_copy(update=settings))
    async with app.router.lifespan_context(app):
        yield app


async def create(client: httpx.AsyncClient, name: str, **headers: str) -> httpx.Response:
    return await client.post(
        "/customers/metrics", json={"name": name, "data_type": "NUMBER"}, headers=headers
    )


async def metric_names(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/customers/metrics")
    assert response.status_code == 200, response.text
    return [m["name"] for m in response.json()["data"]]


async def test_over_the_limit_is_429_with_its_fields_and_writes_nothing(backend):
    async with limited_app(backend, rate_limit_per_second=1, rate_limit_burst=3) as app:
        org = await create_org(app)
        other_key = await issue_key(app, org.id)
        async with api_client(app, org.api_key) as client, api_client(app, other_key) as other:
            admitted = [await create(client, f"m{n}") for n in range(3)]
            refused = await create(client, "refused", **{"Idempotency-Key": "retry-me"})
            stored = await metric_names(other)
            await asyncio.sleep(int(refused.headers["retry-after"]) + 0.05)
            retried = await create(client, "refused", **{"Idempotency-Key": "retry-me"})

    assert [r.status_code for r in admitted] == [201, 201, 201]
    assert [r.headers["ratelimit"] for r in admitted] == [
        '"per-key";r=2;t=1',
        '"per-key";r=1;t=2',
        '"per-key";r=0;t=3',
    ]
    assert refused.status_code == 429
    assert refused.json() == {
        "detail": "Too many requests for this API key; retry in 1 s.",
        "code": "rate_limited",
    }
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit"] == '"per-key";r=0;t=1'
    assert refused.headers["ratelimit-policy"] == '"per-key";q=3;w=3'
    assert refused.headers["x-request-id"]
    # Read back through the API with another key: the refused create stored nothing...
    assert stored == ["m0", "m1", "m2"]
    # ...and neither claimed its Idempotency-Key nor took a metric number.
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert retried.json()["metric_id"] == "METRIC-004"


async def test_each_key_has_its_own_bucket(backend):
    async with limited_app(backend, rate_limit_per_second=1, rate_limit_burst=2) as app:
        org, stranger = await create_org(app), await create_org(app)
        second_key = await issue_key(app, org.id)
        async with (
            api_client(app, org.api_key) as client,
            api_client(app, second_key) as same_org,
            api_client(app, stranger.api_key) as other_org,
        ):
            spent = [(await client.get("/customers/metrics")).status_code for _ in range(3)]
            same = await same_org.get("/customers/metrics")
            other = await other_org.get("/customers/metrics")

    assert spent == [200, 200, 429]
    assert same.status_code == 200
    assert same.headers["ratelimit"] == '"per-key";r=1;t=1'
    assert other.status_code == 200
    assert other.headers["ratelimit"] == '"per-key";r=1;t=1'


async def test_the_bucket_refills_at_the_configured_rate(backend):
    async with limited_app(backend, rate_limit_per_second=2, rate_limit_burst=2) as app:
        org = await create_org(app)
        async with api_client(app, org.api_key) as client:

            async def statuses(count: int) -> list[int]:
                return [(await client.get("/customers/metrics")).status_code for _ in range(count)]

            burst = await statuses(3)
            await asyncio.sleep(0.55)  # one token back (2 a second)
            one_back = await statuses(2)
            await asyncio.sleep(1.05)  # the whole burst back, and no more
            all_back = await statuses(3)

    assert burst == [200, 200, 429]
    assert one_back == [200, 429]
    assert all_back == [200, 200, 429]


async def test_refused_and_unauthenticated_requests_spend_nothing(backend):
    async with limited_app(backend, rate_limit_per_second=1, rate_limit_burst=2) as app:
        org = await create_org(app)
        async with api_client(app, org.api_key) as client, api_client(app) as anonymous:
            unauthenticated = await anonymous.get("/customers/metrics")
            spent = [(await client.get("/customers/metrics")).status_code for _ in range(5)]
            await asyncio.sleep(1.05)
            after = [(await client.get("/customers/metrics")).status_code for _ in range(2)]

    assert unauthenticated.status_code == 401
    assert "ratelimit" not in unauthenticated.headers
    assert spent == [200, 200, 429, 429, 429]
    # Three refusals did not push the refill back: one second gave one token.
    assert after == [200, 429]


async def test_default_limits_are_generous_and_zero_turns_them_off(backend, client):
    response = await client.get("/customers/metrics")
    assert response.headers["ratelimit-policy"] == '"per-key";q=20000;w=2'
    assert response.headers["ratelimit"] == '"per-key";r=19999;t=1'

    async with limited_app(backend, rate_limit_per_second=0) as app:
        org = await create_org(app)
        async with api_client(app, org.api_key) as unlimited:
            responses = [await unlimited.get("/customers/metrics") for _ in range(30)]
    assert {r.status_code for r in responses} == {200}
    assert not any("ratelimit" in r.headers for r in responses)


async def test_each_worker_enforces_its_share_without_redis(backend):
    """Four workers and no Redis: each worker's bucket holds a quarter of the rate and of the
    burst, so the server as a whole never admits more than the limit."""
    settings = {"rate_limit_per_second": 8, "rate_limit_burst": 12, "workers": 4}
    async with limited_app(backend, **settings) as app:
        org = await create_org(app)
        async with api_client(app, org.api_key) as client:
            responses = [await client.get("/customers/metrics") for _ in range(4)]

    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0].headers["ratelimit-policy"] == '"per-key";q=3;w=2'


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_unreachable_redis_falls_back_to_the_local_share(backend, caplog):
    """Redis down is neither a 500 nor a 503: each worker enforces its own share, and says so
    once in the log."""
    redis_url = f"redis://127.0.0.1:{_closed_port()}/0"
    settings = {"rate_limit_per_second": 1, "rate_limit_burst": 3, "redis_url": redis_url}
    # The service's loggers do not propagate to the root logger, where caplog listens.
    logger = logging.getLogger("customer_metrics.ratelimit")
    logger.addHandler(caplog.handler)
    try:
        async with limited_app(backend, **settings) as app:
            org = await create_org(app)
            async with api_client(app, org.api_key) as client:
                responses = [await client.get("/customers/metrics") for _ in range(5)]
    finally:
        logger.removeHandler(caplog.handler)

    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert responses[0].headers["ratelimit-policy"] == '"per-key";q=3;w=3'
    warnings = [r.getMessage() for r in caplog.records if r.name == "customer_metrics.ratelimit"]
    assert len(warnings) == 1, warnings
    assert "Redis is unreachable for rate limits" in warnings[0]
