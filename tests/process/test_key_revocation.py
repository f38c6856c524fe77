"""A key revoked from the command line fails on the running server's very next request."""

from __future__ import annotations

import pytest

from tests.process.conftest import ServerProcess

pytestmark = [pytest.mark.process, pytest.mark.xdist_group("process")]

UNKNOWN_KEY = "cm_" + "Z" * 40


async def test_revoked_key_fails_on_its_next_request_like_an_unknown_key(server: ServerProcess):
    org = server.create_org("Revocation")
    key = org["api_key"]
    other = server.cli_json("key", "create", "--org", str(org["organization_id"]))
    assert other["organization_id"] == org["organization_id"]

    async with server.client(key) as client, server.client(other["api_key"]) as other_client:
        before = await client.get("/customers/metrics")
        assert before.status_code == 200, before.text
        # The routes that remember a key they have seen active (on PostgreSQL: metric
        # creates, value writes, the agent view) have all seen this one.
        metric = await client.post(
            "/customers/metrics", json={"name": "Seats", "key": "seats", "data_type": "INTEGER"}
        )
        assert metric.status_code == 201, metric.text
        for value in (1, 2):
            written = await client.post(
                "/customers/acme/metrics/seats/values", json={"value": value}
            )
            assert written.status_code == 201, written.text
        view = await client.get("/customers/acme/metrics")
        assert view.status_code == 200, view.text

        revoked = server.cli("key", "revoke", key[:11])
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr

        # Same client, so possibly the same kept-alive connection: nothing may be cached.
        listed = await client.get("/customers/metrics")
        created = await client.post(
            "/customers/metrics", json={"name": "After revocation", "data_type": "NUMBER"}
        )
        written = await client.post("/customers/acme/metrics/seats/values", json={"value": 3})
        viewed = await client.get("/customers/acme/metrics")
        # An answer that would be an error (a wrong-typed value, an unknown customer) is no
        # way around the check either.
        invalid = await client.post("/customers/acme/metrics/seats/values", json={"value": "x"})
        missing = await client.get("/customers/nobody/metrics")
        unknown = await client.get(
            "/customers/metrics", headers={"Authorization": f"Bearer {UNKNOWN_KEY}"}
        )

        assert unknown.status_code == 401, unknown.text
        assert unknown.json()["code"] == "unauthorized"
        for refused in (listed, created, written, viewed, invalid, missing):
            assert refused.status_code == 401, refused.text
            assert refused.content == unknown.content
            assert refused.headers["www-authenticate"] == "Bearer"

        # Revoking one key by its prefix leaves the organization's other key working, and
        # the refused create stored nothing.
        still = await other_client.get("/customers/metrics")
        assert still.status_code == 200, still.text
        assert [m["key"] for m in still.json()["data"]] == ["seats"]
        current = await other_client.get("/customers/acme/metrics")
        assert current.status_code == 200, current.text
        assert [m["value"] for m in current.json()["data"]] == [2]
        history = await other_client.get("/customers/acme/metrics/seats/values")
        assert [v["value"] for v in history.json()["data"]] == [2, 1]
