"""Metric definitions: create, list, get, patch, archive, delete (contract §1)."""

from __future__ import annotations

import pytest

from tests.builders import create_metric


async def test_key_is_derived_from_the_name_with_suffixes_on_collision(client):
    first = await create_metric(client, name="Customer Tier")
    second = await create_metric(client, name="customer-tier!")
    third = await create_metric(client, name="CUSTOMER  tier?")
    assert [first["key"], second["key"], third["key"]] == [
        "customer_tier",
        "customer_tier_2",
        "customer_tier_3",
    ]


async def test_key_derivation_handles_digits_symbols_and_accents(client):
    assert (await create_metric(client, name="30-day NPS"))["key"] == "m_30_day_nps"
    assert (await create_metric(client, name="%%%"))["key"] == "metric"
    assert (await create_metric(client, name="Été ARR"))["key"] == "ete_arr"


async def test_explicit_key_is_kept_and_a_taken_key_is_409(client):
    created = await create_metric(client, name="Annual revenue", key="arr")
    assert created["key"] == "arr"
    response = await client.post(
        "/customers/metrics", json={"name": "Other", "key": "arr", "data_type": "NUMBER"}
    )
    assert response.status_code == 409
    assert response.json()["code"] == "key_taken"
    assert "key" in response.json()["detail"]


@pytest.mark.parametrize(
    "variant",
    ["ARR", "arr", "  Arr  ", "ＡＲＲ"],
    ids=["same", "lower", "padded", "fullwidth"],
)
async def test_duplicate_names_compare_case_insensitively_after_normalisation(client, variant):
    await create_metric(client, name="Arr")
    response = await client.post(
        "/customers/metrics", json={"name": variant, "data_type": "NUMBER"}
    )
    assert response.status_code == 409
    assert response.json()["code"] == "name_taken"
    assert "name" in response.json()["detail"]


async def test_nfd_and_nfc_names_collide(client):
    await create_metric(client, name="Caf\u00e9")
    response = await client.post(
        "/customers/metrics", json={"name": "Cafe\u0301", "data_type": "NUMBER"}
    )
    assert response.status_code == 409


async def test_a_409_does_not_consume_a_metric_number(client):
    await create_metric(client, name="A")
    await client.post("/customers/metrics", json={"name": "a", "data_type": "NUMBER"})
    await client.post("/customers/metrics", json={"name": "B", "key": "a", "data_type": "NUMBER"})
    third = await create_metric(client, name="C")
    assert third["metric_id"] == "METRIC-002"


async def test_archived_names_still_block_new_definitions(client):
    created = await create_metric(client, name="Seats")
    await client.patch(f"/customers/metrics/{created['metric_id']}", json={"archived": True})
    response = await client.post(
        "/customers/metrics", json={"name": "seats", "data_type": "NUMBER"}
    )
    assert response.status_code == 409


async def test_unit_and_allowed_values_round_trip(client):
    created = await create_metric(
        client, name="Plan", data_type="STRING", allowed_values=["free", "pro", "enterprise"]
    )
    assert created["allowed_values"] == ["free", "pro", "enterprise"]
    money = await create_metric(client, name="ARR", unit="USD")
    assert money["unit"] == "USD"
    fetched = await client.get(f"/customers/metrics/{created['metric_id']}")
    assert fetched.json()["allowed_values"] == ["free", "pro", "enterprise"]


async def test_a_create_answers_what_is_stored(client):
    """The 201 is built from what was sent, not read back: every field a later GET shows
    (the name cleaned as stored, the key, derived after a clash too, texts, allowed values,
    times) is the same."""
    sent = [
        {"name": "  Plan tier ", "data_type": "STRING", "allowed_values": ["pro", "free"]},
        {"name": "ARR", "key": "arr", "unit": "USD", "description": "Annual, in dollars"},
        {"name": "Zoe\u0301 score", "description": "", "data_type": "BOOLEAN"},
        {"name": "Plan-tier"},  # its key takes a suffix: plan_tier is taken above
    ]
    for body in sent:
        created = await client.post("/customers/metrics", json={"data_type": "NUMBER", **body})
        assert created.status_code == 201, created.text
        fetched = await client.get(f"/customers/metrics/{created.json()['metric_id']}")
        stored = {k: v for k, v in fetched.json().items() if k != "usage"}
        assert created.json() == stored
    assert stored["key"] == "plan_tier_2"


async def test_get_by_metric_id_key_and_numeric_id_with_usage(client):
    created = await create_metric(client, name="Seats")
    for ref in (created["metric_id"], created["key"], str(created["id"]), "METRIC-1"):
        response = await client.get(f"/customers/metrics/{ref}")
        assert response.status_code == 200, ref
        body = response.json()
        assert body["metric_id"] == created["metric_id"]
        assert body["usage"] == {"customers": 0, "values": 0, "last_value_at": None}


@pytest.mark.parametrize(
    "ref", ["METRIC-999", "nope", "999", "Bad Ref", "99999999999999999999999", "METRIC-"]
)
async def test_unknown_refs_are_404(client, ref):
    await create_metric(client, name="Seats")
    response = await client.get(f"/customers/metrics/{ref}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_list_is_ordered_by_id_and_paginates_with_cursor(client):
    created = [await create_metric(client, name=f"Metric {i}") for i in range(7)]
    seen = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/customers/metrics", params=params)).json()
        seen += [m["metric_id"] for m in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [m["metric_id"] for m in created]
    assert pages == 3


async def test_list_page_is_stable_when_metrics_are_added_between_pages(client):
    for i in range(3):
        await create_metric(client, name=f"Metric {i}")
    first = (await client.get("/customers/metrics", params={"limit": 2})).json()
    await create_metric(client, name="Late arrival")
    second = (
        await client.get("/customers/metrics", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    ids = [m["metric_id"] for m in first["data"] + second["data"]]
    assert ids == ["METRIC-001", "METRIC-002", "METRIC-003", "METRIC-004"]


async def test_list_filters(client):
    await create_metric(client, name="Annual Revenue", key="arr")
    await create_metric(client, name="Plan tier", data_type="STRING")
    archived = await create_metric(client, name="Old revenue")
    await client.patch(f"/customers/metrics/{archived['key']}", json={"archived": True})

    async def names(**params):
        body = (await client.get("/customers/metrics", params=params)).json()
        return [m["name"] for m in body["data"]]

    assert await names() == ["Annual Revenue", "Plan tier"]
    assert await names(include_archived="true") == ["Annual Revenue", "Plan tier", "Old revenue"]
    assert await names(data_type="string") == ["Plan tier"]
    assert await names(q="REVENUE", include_archived="true") == ["Annual Revenue", "Old revenue"]
    assert await names(q="arr") == ["Annual Revenue"]
    assert await names(q="%") == []
    assert await names(q="_") == ["Plan tier"]  # a literal underscore, in plan_tier only


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "x"},
        {"cursor": "!!"},
        {"cursor": "InN0ciI"},
        {"data_type": "MONEY"},
    ],
)
async def test_bad_list_parameters_are_422(client, params):
    response = await client.get("/customers/metrics", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "query"


async def test_patch_renames_and_keeps_key_and_number(client):
    created = await create_metric(client, name="Seats")
    response = await client.patch(
        f"/customers/metrics/{created['metric_id']}",
        json={"name": "Licensed seats", "description": "Paid seats", "unit": "seats"},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["description"], body["unit"]) == (
        "Licensed seats",
        "Paid seats",
        "seats",
    )
    assert (body["key"], body["metric_id"], body["id"]) == ("seats", "METRIC-001", 1)
    assert body["time_updated"] >= created["time_updated"]
    assert body["time_created"] == created["time_created"]
    again = (await client.get("/customers/metrics/seats")).json()
    assert again["name"] == "Licensed seats"


async def test_patch_to_a_taken_name_is_409_and_changes_nothing(client):
    await create_metric(client, name="Seats")
    other = await create_metric(client, name="ARR")
    response = await client.patch(f"/customers/metrics/{other['key']}", json={"name": " SEATS "})
    assert response.status_code == 409
    assert response.json()["code"] == "name_taken"
    assert (await client.get(f"/customers/metrics/{other['key']}")).json()["name"] == "ARR"


async def test_patch_can_change_case_of_its_own_name(client):
    created = await create_metric(client, name="arr")
    response = await client.patch(f"/customers/metrics/{created['key']}", json={"name": "ARR"})
    assert response.status_code == 200
    assert response.json()["name"] == "ARR"


@pytest.mark.parametrize(
    "body",
    [
        {"key": "other"},
        {"id": 9},
        {"metric_id": "METRIC-009"},
        {"organization_id": 3},
        {"name": None},
        {"archived": None},
        {"data_type": None},
        {"archived": "yes"},
    ],
)
async def test_patch_of_immutable_or_null_fields_is_422(client, body):
    created = await create_metric(client, name="Seats")
    response = await client.patch(f"/customers/metrics/{created['key']}", json=body)
    assert response.status_code == 422
    unchanged = (await client.get(f"/customers/metrics/{created['key']}")).json()
    assert unchanged["key"] == "seats"
    assert unchanged["name"] == "Seats"


async def test_patch_data_type_without_values_and_allowed_values_rules(client):
    created = await create_metric(client, name="Tier", data_type="STRING", allowed_values=["a"])
    ref = f"/customers/metrics/{created['key']}"
    assert (await client.patch(ref, json={"allowed_values": ["a", "b"]})).json()[
        "allowed_values"
    ] == ["a", "b"]
    refused = await client.patch(ref, json={"data_type": "NUMBER"})
    assert refused.status_code == 422  # allowed_values only fits STRING
    changed = await client.patch(ref, json={"data_type": "NUMBER", "allowed_values": None})
    assert changed.status_code == 200
    assert (changed.json()["data_type"], changed.json()["allowed_values"]) == ("NUMBER", None)


async def test_empty_patch_changes_nothing(client):
    created = await create_metric(client, name="Seats")
    response = await client.patch(f"/customers/metrics/{created['key']}", json={})
    assert response.status_code == 200
    assert response.json() == created


async def test_archive_hides_from_list_and_restore_brings_back(client):
    created = await create_metric(client, name="Seats")
    ref = f"/customers/metrics/{created['metric_id']}"
    archived = await client.patch(ref, json={"archived": True})
    assert archived.json()["archived"] is True
    assert (await client.get("/customers/metrics")).json()["data"] == []
    assert (await client.get(ref)).status_code == 200
    restored = await client.patch(ref, json={"archived": False})
    assert restored.json()["archived"] is False
    listed = (await client.get("/customers/metrics")).json()["data"]
    assert [m["metric_id"] for m in listed] == [created["metric_id"]]


async def test_delete_then_404_and_number_never_reused(client):
    created = await create_metric(client, name="Seats")
    response = await client.delete(f"/customers/metrics/{created['metric_id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"/customers/metrics/{created['metric_id']}")).status_code == 404
    assert (await client.delete(f"/customers/metrics/{created['metric_id']}")).status_code == 404
    again = await create_metric(client, name="Seats")
    assert again["metric_id"] == "METRIC-002"
    assert again["key"] == "seats"


async def test_name_of_deleted_metric_can_be_used_again(client):
    created = await create_metric(client, name="Seats")
    await client.delete(f"/customers/metrics/{created['key']}?cascade=true")
    assert (await create_metric(client, name="SEATS"))["name"] == "SEATS"


async def test_concurrent_creates_deriving_one_key_get_distinct_keys_and_gapless_numbers(client):
    import asyncio

    names = [f"customer{'-' * i}tier" for i in range(1, 9)]
    responses = await asyncio.gather(
        *(client.post("/customers/metrics", json={"name": n, "data_type": "NUMBER"}) for n in names)
    )
    assert [r.status_code for r in responses] == [201] * len(names), [
        r.text for r in responses if r.status_code != 201
    ]
    keys = sorted(r.json()["key"] for r in responses)
    assert keys == sorted(["customer_tier"] + [f"customer_tier_{i}" for i in range(2, 9)])
    numbers = sorted(r.json()["id"] for r in responses)
    assert numbers == list(range(1, 9))
