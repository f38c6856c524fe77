"""What uvicorn adds on a real server: no `Server` header, and the scheme a TLS proxy on
the same host forwards is kept in the absolute redirect the router gives for a trailing
slash."""

from __future__ import annotations

import httpx
import pytest

from tests.process.configured import servers

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("process")]


@pytest.fixture
def start_server(backend, tmp_path, request):
    with servers(backend, tmp_path, request) as start:
        yield start


async def test_no_server_header_and_a_forwarded_scheme_is_kept(start_server):
    server = start_server()
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        health = await client.get("/healthz")
        redirect = await client.get(
            "/external/v1/customers/metrics/", headers={"X-Forwarded-Proto": "https"}
        )
    assert health.status_code == 200
    assert "server" not in health.headers
    assert redirect.status_code == 307
    assert redirect.headers["location"].startswith("https://")
