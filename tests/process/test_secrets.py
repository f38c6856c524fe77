"""API keys never show up in a real server's output (at `trace`, its most verbose log level),
in any answer, or in its database, wherever a client puts them.

Keys are made by the command line (`org create`, `key create`) and by `serve` itself (the one
key it prints on an empty embedded database, on purpose); every answer is searched by the
test client, and the `server` fixture searches the server's output and a dump of its
database for every key at teardown. This test also checks that the keys did reach the
places they could leak from (the trace log shows the requests, with the keys cut to their
prefix), so the search is not vacuous."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from customer_metrics.api_keys.secrets import display_prefix
from tests import leaks
from tests.process.conftest import ServerProcess

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("process")]


async def _send_keys_everywhere(server: ServerProcess, key: str, revoked: str) -> int:
    """Keys in every place a careless client might put them; returns how many requests."""
    sent = 0
    async with server.client() as anon, server.client(key) as client:
        requests = [
            client.post("/customers/metrics", json={"name": "Seats", "data_type": "INTEGER"}),
            anon.get("/customers/metrics", headers={"X-API-Key": key}),
            anon.get("/customers/metrics", headers={"Authorization": f"Bearer {revoked}"}),
            anon.get("/customers/metrics", headers={"Authorization": f"Token {key}"}),
            anon.get("/customers/metrics", headers={"Authorization": f"Basic {key}"}),
            anon.get("/customers/metrics", params={"api_key": key}),
            client.get("/customers/metrics", params={"api_key": key, "limit": "x"}),
            client.post(
                "/customers/metrics", json={"name": "X", "data_type": "STRING", "key": key}
            ),
            client.post("/customers/metrics", json={"name": "X", "data_type": key}),
            client.get(f"/customers/{key}/metrics"),
            client.get(f"/customers/metrics/{key}"),
            client.get(f"/no-such-route/{key}"),
            client.get("/customers/metrics", headers={"X-Request-ID": key}),
            client.post("/customers/metrics", content=key, headers={"Content-Type": "text/plain"}),
            client.post("/customers/metrics", content=f'{{"name": "{key}'),
            client.post(
                "/customers/metrics/values",
                json={"values": [{"customer_id": "acme", "metric": key, "value": 1}]},
                headers={"Idempotency-Key": "secrets"},
            ),
            client.post("/customers/acme/metrics/seats/values", json={"value": 1, "api_key": key}),
        ]
        for request in requests:
            await request  # the client's response hook fails on any key in the answer
            sent += 1
        assert (await anon.get("/customers/metrics")).status_code == 401
    return sent


async def test_keys_sent_anywhere_never_reach_output_answers_or_database(server: ServerProcess):
    server.stop()
    server.env["CM_LOG_LEVEL"] = "trace"
    server.start()
    org = server.create_org("Secrets")
    second = server.cli_json("key", "create", "--org", str(org["organization_id"]))["api_key"]
    revoked = server.cli_json("key", "create", "--org", str(org["organization_id"]))["api_key"]
    # A whole key where its prefix is expected: refused, and not printed back.
    wrong = server.cli("key", "revoke", revoked)
    assert wrong.returncode == 1
    assert display_prefix(revoked) + "[redacted]" in wrong.stderr
    assert server.cli("key", "revoke", display_prefix(revoked)).returncode == 0
    assert {org["api_key"], second, revoked} <= leaks.ISSUED

    started = time.monotonic()
    sent = await _send_keys_everywhere(server, org["api_key"], revoked)
    sent += await _send_keys_everywhere(server, second, revoked)
    server.stop()

    output = leaks.without_bootstrap_notice(server.log())
    # The requests were logged, keys and all (uvicorn logs each query string at trace level)…
    assert "Started scope=" in output
    for key in (org["api_key"], second):
        assert f"api_key={display_prefix(key)}[redacted]" in output
    # …and no key made in this session is in the output or the database.
    leaks.assert_no_key_in(output, "the server's output")
    url = server.env.get("CM_DATABASE_URL", "")
    sqlite_path = None if url else Path(server.env["CM_DATA_DIR"]) / "customer-metrics.db"
    dump = leaks.dump_database(url, sqlite_path)
    leaks.assert_no_key_in(dump, "the database")
    print(
        f"{len(leaks.ISSUED)} keys searched for in {sent} answers, {len(output):,} characters "
        f"of server output and a {len(dump):,}-byte database dump in "
        f"{time.monotonic() - started:.1f}s: none found"
    )
