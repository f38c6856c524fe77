"""API keys decide the organization; every failure to authenticate looks the same."""

from __future__ import annotations

import pytest

from tests.builders import create_metric, create_org, issue_key, revoke_key
from tests.conftest import api_client

UNKNOWN_KEY = "cm_" + "A" * 40


async def _unauthorized_responses(app, org):
    revoked = await issue_key(app, org.id)
    await revoke_key(app, revoked[:11])
    variants = {
        "missing": {},
        "empty-bearer": {"Authorization": "Bearer "},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "wrong-scheme": {"Authorization": f"Basic {org.api_key}"},
        "unknown": {"Authorization": f"Bearer {UNKNOWN_KEY}"},
        "unknown-x-api-key": {"X-API-Key": UNKNOWN_KEY},
        "revoked": {"Authorization": f"Bearer {revoked}"},
        "too-long": {"Authorization": "Bearer " + "cm_" + "A" * 5000},
    }
    responses = {}
    async with api_client(app) as anon:
        for name, headers in variants.items():
            responses[name] = await anon.get("/customers/metrics", headers=headers)
    return responses


async def test_every_kind_of_bad_key_gets_the_same_401_byte_for_byte(app, org):
    responses = await _unauthorized_responses(app, org)
    bodies = {name: r.content for name, r in responses.items()}
    assert {r.status_code for r in responses.values()} == {401}
    assert len(set(bodies.values())) == 1, bodies
    assert all(r.headers["www-authenticate"] == "Bearer" for r in responses.values())
    assert responses["missing"].json()["code"] == "unauthorized"


async def test_x_api_key_header_is_accepted(app, org):
    async with api_client(app) as anon:
        response = await anon.get("/customers/metrics", headers={"X-API-Key": org.api_key})
    assert response.status_code == 200


async def test_revoked_key_fails_on_its_next_request_other_keys_keep_working(app, org):
    second = await issue_key(app, org.id)
    async with api_client(app, second) as client:
        assert (await client.get("/customers/metrics")).status_code == 200
        await revoke_key(app, second[:11])
        assert (await client.get("/customers/metrics")).status_code == 401
    async with api_client(app, org.api_key) as client:
        assert (await client.get("/customers/metrics")).status_code == 200


async def test_unauthenticated_writes_store_nothing(app, client):
    async with api_client(app) as anon:
        response = await anon.post("/customers/metrics", json={"name": "X", "data_type": "NUMBER"})
    assert response.status_code == 401
    assert (await client.get("/customers/metrics")).json()["data"] == []


@pytest.mark.parametrize("ref_field", ["metric_id", "key", "id"])
async def test_another_organizations_metric_is_404_on_every_route(app, client, ref_field):
    theirs = await create_metric(client, name="Secret ARR")
    ref = str(theirs[ref_field])
    intruder = await create_org(app, "Intruder")
    async with api_client(app, intruder.api_key) as other:
        answers = [
            await other.get(f"/customers/metrics/{ref}"),
            await other.patch(f"/customers/metrics/{ref}", json={"name": "Mine now"}),
            await other.delete(f"/customers/metrics/{ref}"),
            await other.delete(f"/customers/metrics/{ref}?cascade=true"),
        ]
        listed = (await other.get("/customers/metrics", params={"include_archived": True})).json()
    for answer in answers:
        assert answer.status_code == 404
        assert answer.json() == {
            "detail": f"No metric {ref!r} in this organization.",
            "code": "not_found",
        }
    assert listed["data"] == []
    mine = (await client.get(f"/customers/metrics/{ref}")).json()
    assert mine["name"] == "Secret ARR"


async def test_missing_and_foreign_metric_answers_are_identical(app, client):
    await create_metric(client, name="Secret ARR")
    intruder = await create_org(app, "Intruder")
    async with api_client(app, intruder.api_key) as other:
        foreign = await other.get("/customers/metrics/METRIC-001")
        await create_metric(other, name="Own")
        missing = await other.get("/customers/metrics/METRIC-002")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["code"] == missing.json()["code"]


async def test_organization_id_cannot_be_chosen_by_the_request(client, org):
    response = await client.post(
        "/customers/metrics", json={"name": "X", "data_type": "NUMBER", "organization_id": 999}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "extra_forbidden"


async def test_only_a_keyed_hash_of_a_key_is_stored(app, org):
    import hashlib
    import hmac

    from sqlalchemy import text

    async with app.state.database.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT * FROM api_keys WHERE organization_id = :o"), {"o": org.id}
            )
        ).all()
    dump = repr(rows)
    assert org.api_key not in dump
    assert org.api_key[11:] not in dump  # not even the secret part
    expected = hmac.new(app.state.secret, org.api_key.encode(), hashlib.sha256).hexdigest()
    assert expected in dump
    assert hashlib.sha256(org.api_key.encode()).hexdigest() not in dump  # keyed, not a bare hash
