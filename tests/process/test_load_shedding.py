"""Load shedding on a real server: with CM_MAX_REQUESTS_IN_FLIGHT requests in flight, the next
one is answered 503 `unavailable` at once, health endpoints still answer, and the requests in
flight finish normally.

Requests are held in flight the way a slow client holds them: headers sent, body trickling."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.process.configured import servers

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("process")]


@pytest.fixture
def start_server(backend, tmp_path, request):
    with servers(backend, tmp_path, request) as start:
        yield start


IN_FLIGHT = 2


class SlowPost:
    """A metric create whose body is sent in two parts: in flight until `finish`."""

    def __init__(self, port: int, api_key: str, name: str) -> None:
        self.port = port
        self.api_key = api_key
        self.body = json.dumps({"name": name, "data_type": "NUMBER"}).encode()

    async def begin(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            "POST /external/v1/customers/metrics HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {self.api_key}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        self.writer.write(head.encode() + self.body[:5])
        await self.writer.drain()

    async def finish(self) -> int:
        self.writer.write(self.body[5:])
        await self.writer.drain()
        status_line = await asyncio.wait_for(self.reader.readline(), timeout=30)
        self.writer.close()
        return int(status_line.split()[1])


async def test_above_the_in_flight_limit_new_requests_get_503_at_once(start_server):
    server = start_server(CM_MAX_REQUESTS_IN_FLIGHT=str(IN_FLIGHT))
    api_key = server.create_org("shedding")["api_key"]
    slow = [SlowPost(server.port, api_key, f"slow {n}") for n in range(IN_FLIGHT)]
    for request in slow:
        await request.begin()
        await asyncio.sleep(0.3)  # until the server has read its headers: it is in flight
    async with server.client(api_key) as client, httpx.AsyncClient(base_url=server.base_url) as ops:
        started = time.monotonic()
        shed = await client.get("/customers/metrics")
        took = time.monotonic() - started
        health = [await ops.get(path) for path in ("/healthz", "/readyz", "/metrics")]
        finished = [await request.finish() for request in slow]
        # A request stays in flight until its session is released, just after its response.
        after = await _first_admitted(client)

    assert shed.status_code == 503, shed.text
    assert shed.json() == {
        "detail": "The server is at capacity; retry shortly.",
        "code": "unavailable",
    }
    assert shed.headers["retry-after"] == "1"
    assert shed.headers["x-request-id"]
    assert took < 1.0, f"the shed request waited {took:.2f} s"
    assert [r.status_code for r in health] == [200, 200, 200]
    # The requests in flight were not disturbed, and the server takes new ones again.
    assert finished == [201] * IN_FLIGHT
    assert sorted(m["name"] for m in after.json()["data"]) == ["slow 0", "slow 1"]


async def _first_admitted(client: httpx.AsyncClient) -> httpx.Response:
    for _ in range(50):
        response = await client.get("/customers/metrics")
        if response.status_code != 503:
            assert response.status_code == 200, response.text
            return response
        await asyncio.sleep(0.1)
    pytest.fail("the server kept shedding after the requests in flight had finished")
