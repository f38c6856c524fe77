"""The batch write (contract §4): per-item verdicts, atomic mode, customers on the fly."""

from __future__ import annotations

import json

import pytest

from customer_metrics.queries.fold import fold_once
from customer_metrics.values.batch import BatchService
from tests.builders import create_metric, create_org, current_values
from tests.conftest import api_client

URL = "/customers/metrics/values"


async def _setup(client):
    await create_metric(client, name="ARR")
    await create_metric(client, name="Seats", data_type="INTEGER")
    await create_metric(client, name="Plan", data_type="STRING", allowed_values=["free", "pro"])


async def test_valid_items_are_stored_and_invalid_ones_reported_by_index(client):
    await _setup(client)
    response = await client.post(
        URL,
        json={
            "values": [
                {"customer_id": "acme", "metric": "arr", "value": "1234.50"},
                {"customer_id": "acme", "metric": "METRIC-002", "value": 1.5},
                {"customer_id": "beta", "metric": "3", "value": "pro", "source": "crm"},
                {"customer_id": "beta", "metric": "nope", "value": 1},
                {"customer_id": "gamma", "metric": "plan", "value": "gold"},
                {"customer_id": "metrics", "metric": "arr", "value": 1},
                {"metric": "arr", "value": 1},
                {"customer_id": "acme", "metric": "seats", "value": 3, "bogus": 1},
                {"customer_id": "acme", "metric": "seats", "increment": 2},
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 6)
    by_index = {e["index"]: e["detail"] for e in body["errors"]}
    assert sorted(by_index) == [1, 3, 4, 5, 6, 7]
    assert by_index[1][0]["loc"] == ["body", "values", 1, "value"]
    assert by_index[3][0]["loc"] == ["body", "values", 3, "metric"]
    assert by_index[4][0]["type"] == "enum"
    assert by_index[5][0]["loc"] == ["body", "values", 5, "customer_id"]
    assert by_index[6][0] == {
        "type": "missing",
        "loc": ["body", "values", 6, "customer_id"],
        "msg": "Field required",
    }
    assert by_index[7][0]["type"] == "extra_forbidden"
    assert await current_values(client, "acme") == {"arr": 1234.5, "seats": 2}
    assert await current_values(client, "beta") == {"plan": "pro"}
    assert (await client.get("/customers/gamma")).status_code == 404


async def test_rejected_counts_items_not_errors(client):
    await _setup(client)
    body = (await client.post(URL, json={"values": [{"value": 1, "bogus": 2}]})).json()
    assert body["rejected"] == 1
    assert len(body["errors"]) == 1
    assert len(body["errors"][0]["detail"]) >= 3


async def test_atomic_batch_stores_nothing_when_any_item_is_bad(client):
    await _setup(client)
    items = [
        {"customer_id": "acme", "metric": "arr", "value": 1},
        {"customer_id": "newco", "metric": "arr", "value": 2},
        {"customer_id": "acme", "metric": "seats", "value": "three"},
    ]
    response = await client.post(URL, json={"values": items, "atomic": True})
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == 0
    assert body["rejected"] == 1
    assert body["errors"][0]["index"] == 2
    assert body["detail"][0]["loc"] == ["body", "values", 2, "value"]
    assert (await client.get("/customers/acme")).status_code == 404
    assert (await client.get("/customers/newco")).status_code == 404
    ok = await client.post(URL, json={"values": items[:2], "atomic": True})
    assert ok.json() == {"accepted": 2, "rejected": 0, "errors": []}


async def test_atomic_batch_with_an_overflowing_increment_stores_nothing(client):
    await _setup(client)
    await client.post(
        URL, json={"values": [{"customer_id": "a", "metric": "seats", "value": 2**63 - 1}]}
    )
    items = [
        {"customer_id": "a", "metric": "arr", "value": 5},
        {"customer_id": "a", "metric": "seats", "increment": 1},
    ]
    response = await client.post(URL, json={"values": items, "atomic": True})
    assert response.status_code == 422
    assert await current_values(client, "a") == {"seats": 2**63 - 1}
    partial = (await client.post(URL, json={"values": items})).json()
    assert (partial["accepted"], partial["rejected"]) == (1, 1)
    assert await current_values(client, "a") == {"arr": 5, "seats": 2**63 - 1}


async def test_create_customers_false_rejects_unknown_customers(client):
    await _setup(client)
    await client.put("/customers/known", json={})
    response = await client.post(
        URL,
        json={
            "create_customers": False,
            "values": [
                {"customer_id": "known", "metric": "arr", "value": 1},
                {"customer_id": "unknown", "metric": "arr", "value": 1},
            ],
        },
    )
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["errors"][0]["detail"][0]["type"] == "not_found"
    assert (await client.get("/customers/unknown")).status_code == 404


async def test_duplicates_in_one_batch_last_one_wins(client):
    await _setup(client)
    at = "2024-01-01T00:00:00Z"
    items = [
        {"customer_id": "a", "metric": "arr", "value": 1, "observed_at": at},
        {"customer_id": "a", "metric": "arr", "value": 2, "observed_at": at},
        {"customer_id": "a", "metric": "arr", "value": 0, "observed_at": "2023-01-01T00:00:00Z"},
    ]
    body = (await client.post(URL, json={"values": items})).json()
    assert body["accepted"] == 3
    history = (await client.get("/customers/a/metrics/arr/values")).json()["data"]
    assert [h["value"] for h in history] == [2, 0]
    assert await current_values(client, "a") == {"arr": 2}


async def test_batch_respects_newer_stored_values(client):
    await _setup(client)
    await client.post(
        "/customers/a/metrics/arr/values", json={"value": 9, "observed_at": "2024-06-01T00:00:00Z"}
    )
    items = [
        {"customer_id": "a", "metric": "arr", "value": 1, "observed_at": "2024-01-01T00:00:00Z"}
    ]
    await client.post(URL, json={"values": items})
    assert await current_values(client, "a") == {"arr": 9}


async def test_generated_customer_numbers_do_not_collide_after_a_batch(client):
    await _setup(client)
    items = [{"customer_id": f"c{i}", "metric": "arr", "value": i} for i in range(30)]
    assert (await client.post(URL, json={"values": items})).json()["accepted"] == 30
    created = await client.post("/customers", json={})
    assert created.status_code == 201
    listed = (await client.get("/customers", params={"limit": 200})).json()["data"]
    assert len({c["id"] for c in listed}) == 31


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"values": "x"},
        {"values": [1]},
        {"values": [], "atomic": "yes"},
        {"values": [], "extra": 1},
    ],
)
async def test_malformed_batch_bodies(client, body):
    response = await client.post(URL, json=body)
    if body.get("values") == [1]:
        assert response.status_code == 422 or response.json()["rejected"] == 1
    else:
        assert response.status_code == 422


async def test_more_than_10000_items_is_422(client):
    await _setup(client)
    items = [{"customer_id": "a", "metric": "arr", "value": 1}] * 10_001
    response = await client.post(URL, json={"values": items})
    assert response.status_code == 422
    assert (await client.get("/customers/a")).status_code == 404


async def test_batch_metrics_are_tenant_scoped(app, client):
    await _setup(client)
    intruder = await create_org(app)
    async with api_client(app, intruder.api_key) as other:
        body = (
            await other.post(
                URL, json={"values": [{"customer_id": "a", "metric": "arr", "value": 1}]}
            )
        ).json()
    assert body["rejected"] == 1
    assert (await client.get("/customers/a")).status_code == 404


async def test_empty_batch(client):
    assert (await client.post(URL, json={"values": []})).json() == {
        "accepted": 0,
        "rejected": 0,
        "errors": [],
    }


async def test_every_data_type_in_one_batch_is_stored_exactly(client):
    await create_metric(client, name="ARR")
    await create_metric(client, name="Seats", data_type="INTEGER")
    await create_metric(client, name="Plan", data_type="STRING")
    await create_metric(client, name="Active", data_type="BOOLEAN")
    await create_metric(client, name="Renewal", data_type="DATE")
    await create_metric(client, name="Seen", data_type="DATETIME")
    at = "2024-03-01T12:00:00.000Z"
    items = [
        {"customer_id": "a", "metric": "arr", "value": "EXACT", "observed_at": at},
        {"customer_id": "b", "metric": "arr", "value": "0.000000000000000000000000000000000001"},
        {"customer_id": "a", "metric": "seats", "value": 2**63 - 1, "source": "billing"},
        {"customer_id": "a", "metric": "plan", "value": "pro", "source": "crm"},
        {"customer_id": "a", "metric": "active", "value": False},
        {"customer_id": "a", "metric": "renewal", "value": "2025-02-28"},
        {"customer_id": "a", "metric": "seen", "value": "2024-02-29T23:59:59.123+02:00"},
    ]
    # Sent as a JSON number with more digits than a float holds.
    raw = json.dumps({"values": items}).replace('"EXACT"', "12345678901234567890.12")
    response = await client.post(URL, content=raw, headers={"content-type": "application/json"})
    assert response.json() == {"accepted": 7, "rejected": 0, "errors": []}
    current = await current_values(client, "a")
    assert current.pop("arr") == float("12345678901234567890.12")
    assert current == {
        "seats": 2**63 - 1,
        "plan": "pro",
        "active": False,
        "renewal": "2025-02-28",
        "seen": "2024-02-29T21:59:59.123Z",
    }
    view = (await client.get("/customers/a/metrics")).text
    assert '"value":12345678901234567890.12,' in view.replace(" ", "")
    history = (await client.get("/customers/a/metrics/arr/values")).json()["data"]
    assert [(h["observed_at"], h["source"]) for h in history] == [(at, None)]
    seats = (await client.get("/customers/a/metrics/seats/values")).json()["data"]
    assert [(h["value"], h["source"]) for h in seats] == [(2**63 - 1, "billing")]
    tiny = (await client.get("/customers/b/metrics/arr/values")).text
    assert "0.000000000000000000000000000000000001" in tiny


async def test_batches_over_thousands_of_customers(client):
    """More customers than one IN list used to hold: every one is found or created once."""
    await create_metric(client, name="ARR")
    first = [{"customer_id": f"c-{i}", "metric": "arr", "value": i} for i in range(2500)]
    assert (await client.post(URL, json={"values": first})).json()["accepted"] == 2500
    second = [
        {
            "customer_id": f"c-{i}",
            "metric": "arr",
            "value": -i,
            "observed_at": f"2020-01-01T00:00:{i % 60:02d}.000Z",
        }
        for i in range(2000, 3000)
    ]
    unknown = {"create_customers": False, "values": second}
    body = (await client.post(URL, json=unknown)).json()
    assert (body["accepted"], body["rejected"]) == (500, 500)
    assert {e["index"] for e in body["errors"]} == set(range(500, 1000))
    assert (await client.post(URL, json={"values": second})).json()["accepted"] == 1000
    assert await current_values(client, "c-2999") == {"arr": -2999}
    assert await current_values(client, "c-2499") == {"arr": 2499}  # the back-fill is older
    ids: set[int] = set()
    cursor = None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/customers", params=params)).json()
        ids.update(c["id"] for c in page["data"])
        if not (cursor := page["next_cursor"]):
            break
    assert len(ids) == 3000


async def test_one_customer_in_far_apart_items_of_a_big_batch(app, client):
    """Items 0 and 4,000 of one customer: the newer value is current whichever comes first,
    both are history, and the series counts both once folded."""
    await create_metric(client, name="ARR")
    day = "2024-01-02T"
    items = [
        {"customer_id": f"f-{i}", "metric": "arr", "value": 1, "observed_at": f"{day}00:00:00Z"}
        for i in range(4002)
    ]
    items[0] = {"customer_id": "a", "metric": "arr", "value": 2, "observed_at": f"{day}10:00:00Z"}
    items[4000] = {
        "customer_id": "a",
        "metric": "arr",
        "value": 1,
        "observed_at": f"{day}09:00:00Z",
    }
    items[1] = {"customer_id": "b", "metric": "arr", "value": 5, "observed_at": f"{day}08:00:00Z"}
    items[4001] = {
        "customer_id": "b",
        "metric": "arr",
        "value": 6,
        "observed_at": f"{day}11:00:00Z",
    }
    assert (await client.post(URL, json={"values": items})).json()["accepted"] == 4002
    assert await current_values(client, "a") == {"arr": 2}
    assert await current_values(client, "b") == {"arr": 6}
    history = (await client.get("/customers/a/metrics/arr/values")).json()["data"]
    assert [h["value"] for h in history] == [2, 1]
    await fold_once(app.state.database)
    series = {"from": f"{day}00:00:00Z", "to": "2024-01-03T00:00:00Z", "interval": "day"}
    for agg, expected in (("count", 4002), ("sum", 2 + 1 + 5 + 6 + 3998)):
        answer = await client.get("/customers/metrics/arr/series", params={**series, "agg": agg})
        assert answer.json()["data"][0]["value"] == expected, agg


async def test_a_metric_archived_while_a_batch_is_checked_rejects_its_items(client, monkeypatch):
    """A batch is checked before its write transaction begins, so on SQLite the write lock is
    free meanwhile (the archive below would otherwise wait for it); what is stored is
    judged again against the metric as it is then."""
    await _setup(client)
    check = BatchService.check
    archived = []

    async def check_then_archive(self, *args):
        checked = await check(self, *args)
        response = await client.patch("/customers/metrics/seats", json={"archived": True})
        archived.append(response.status_code)
        return checked

    monkeypatch.setattr(BatchService, "check", check_then_archive)
    response = await client.post(
        URL,
        json={
            "values": [
                {"customer_id": "acme", "metric": "arr", "value": 10},
                {"customer_id": "acme", "metric": "seats", "value": 3},
            ]
        },
    )
    assert archived == [200]
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["errors"][0]["index"] == 1
    assert body["errors"][0]["detail"][0]["type"] == "metric_archived"
    assert await current_values(client, "acme") == {"arr": 10}

    monkeypatch.setattr(BatchService, "check", check)  # and an atomic batch stores nothing
    await client.patch("/customers/metrics/seats", json={"archived": False})
    monkeypatch.setattr(BatchService, "check", check_then_archive)
    item = {"customer_id": "beta", "metric": "seats", "value": 4}
    response = await client.post(URL, json={"values": [item], "atomic": True})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["detail"][0]["type"] == "metric_archived"
    assert (await client.get("/customers/beta")).status_code == 404


@pytest.mark.parametrize("create", [True, False])
async def test_a_customer_erased_while_a_batch_is_checked(client, monkeypatch, create):
    """The batch found the customer when it was checked; by the time it writes, the customer
    is gone: it is created again (or, without create_customers, its item is rejected), and
    the erased customer's old values do not come back."""
    await _setup(client)
    old = [{"customer_id": c, "metric": "arr", "value": 1} for c in ("acme", "beta")]
    assert (await client.post(URL, json={"values": old})).status_code == 200
    check = BatchService.check
    erased = []

    async def check_then_erase(self, *args):
        checked = await check(self, *args)
        erased.append((await client.delete("/customers/beta")).status_code)
        return checked

    monkeypatch.setattr(BatchService, "check", check_then_erase)
    items = [
        {"customer_id": "acme", "metric": "arr", "value": 2},
        {"customer_id": "beta", "metric": "seats", "value": 5},
    ]
    response = await client.post(URL, json={"values": items, "create_customers": create})
    assert erased == [204]
    assert response.status_code == 200, response.text
    body = response.json()
    assert await current_values(client, "acme") == {"arr": 2}
    if create:
        assert (body["accepted"], body["rejected"]) == (2, 0)
        assert await current_values(client, "beta") == {"seats": 5}
    else:
        assert (body["accepted"], body["rejected"]) == (1, 1)
        assert body["errors"][0]["detail"][0]["type"] == "not_found"
        assert (await client.get("/customers/beta")).status_code == 404
