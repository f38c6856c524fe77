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

        revoked = server.cli("key", "revoke", key[:11])
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr

        # Same client, so possibly the same kept-alive connection: nothing may be cached.
        listed = await client.get("/customers/metrics")
        created = await client.post(
            "/customers/metrics", json={"name": "After revocation", "data_type": "NUMBER"}
        )
        unknown = await client.get(
            "/customers/metrics", headers={"Authorization": f"Bearer {UNKNOWN_KEY}"}
        )

        assert unknown.status_code == 401, unknown.text
        assert unknown.json()["code"] == "unauthorized"
        for refused in (listed, created):
            assert refused.status_code == 401, refused.text
            assert refused.content == unknown.content
            assert refused.headers["www-authenticate"] == "Bearer"

        # Revoking one key by its prefix leaves the organization's other key working, and
        # the refused create stored nothing.
        still = await other_client.get("/customers/metrics")
        assert still.status_code == 200, still.text
        assert still.json()["data"] == []
