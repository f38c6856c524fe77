"""Time series (contract §5): calendar buckets in a zone, observation and snapshot aggregates."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.builders import create_metric, write_value

URL = "/customers/metrics/{ref}/series"


async def series(client, ref="arr", **params):
    response = await client.get(URL.format(ref=ref), params=params)
    assert response.status_code == 200, response.text
    return response.json(parse_float=Decimal)


async def test_daily_observation_aggregates_with_empty_buckets(client):
    await create_metric(client, name="ARR")
    await write_value(client, "a", "arr", value="10.5", observed_at="2024-01-01T10:00:00Z")
    await write_value(client, "b", "arr", value="20", observed_at="2024-01-01T23:59:59.999Z")
    await write_value(client, "a", "arr", value="5", observed_at="2024-01-03T00:00:00Z")
    params = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-04T00:00:00Z"}
    body = await series(client, **params, agg="sum")
    assert (body["metric_id"], body["interval"], body["tz"], body["agg"]) == (
        "METRIC-001",
        "day",
        "UTC",
        "sum",
    )
    assert [(p["start"], p["end"], p["value"], p["count"]) for p in body["data"]] == [
        ("2024-01-01T00:00:00.000Z", "2024-01-02T00:00:00.000Z", Decimal("30.5"), 2),
        ("2024-01-02T00:00:00.000Z", "2024-01-03T00:00:00.000Z", None, 0),
        ("2024-01-03T00:00:00.000Z", "2024-01-04T00:00:00.000Z", Decimal("5"), 1),
    ]
    counts = await series(client, **params, agg="count")
    assert [p["value"] for p in counts["data"]] == [2, 0, 1]
    avg = await series(client, **params, agg="avg")
    assert avg["data"][0]["value"] == Decimal("15.25")
    low = await series(client, **params, agg="min")
    high = await series(client, **params, agg="max")
    assert (low["data"][0]["value"], high["data"][0]["value"]) == (Decimal("10.5"), Decimal("20"))
    one = await series(client, **params, agg="sum", customer_id="a")
    assert [p["value"] for p in one["data"]] == [Decimal("10.5"), None, Decimal("5")]


async def test_buckets_follow_dst_in_the_time_zone(client):
    await create_metric(client, name="ARR")
    # Europe/Paris moved to summer time on 2024-03-31: that day has 23 hours.
    body = await series(
        client,
        **{
            "from": "2024-03-30T00:00:00+01:00",
            "to": "2024-04-01T00:00:00+02:00",
            "tz": "Europe/Paris",
        },
    )
    spans = [(p["start"], p["end"]) for p in body["data"]]
    assert spans == [
        ("2024-03-29T23:00:00.000Z", "2024-03-30T23:00:00.000Z"),
        ("2024-03-30T23:00:00.000Z", "2024-03-31T22:00:00.000Z"),
    ]
    fall = await series(
        client,
        **{
            "from": "2024-10-27T00:00:00+02:00",
            "to": "2024-10-28T00:00:00+01:00",
            "tz": "Europe/Paris",
        },
    )
    start, end = fall["data"][0]["start"], fall["data"][0]["end"]
    assert (start, end) == ("2024-10-26T22:00:00.000Z", "2024-10-27T23:00:00.000Z")  # 25 hours


async def test_months_and_weeks_are_calendar_units(client):
    await create_metric(client, name="ARR")
    months = await series(
        client,
        **{"from": "2024-01-15T00:00:00Z", "to": "2024-03-02T00:00:00Z", "interval": "month"},
    )
    assert [p["start"][:10] for p in months["data"]] == ["2024-01-01", "2024-02-01", "2024-03-01"]
    assert months["data"][1]["end"][:10] == "2024-03-01"
    weeks = await series(
        client, **{"from": "2024-01-03T00:00:00Z", "to": "2024-01-10T00:00:00Z", "interval": "week"}
    )
    assert [p["start"][:10] for p in weeks["data"]] == ["2024-01-01", "2024-01-08"]  # Mondays


async def test_snapshot_aggregates_use_each_customers_value_at_bucket_end(client):
    await create_metric(client, name="ARR")
    await write_value(client, "a", "arr", value=100, observed_at="2024-01-10T00:00:00Z")
    await write_value(client, "b", "arr", value=50, observed_at="2024-02-10T00:00:00Z")
    await write_value(client, "a", "arr", value=120, observed_at="2024-03-05T00:00:00Z")
    # A back-filled value inside January changes January's end-of-month snapshot.
    await write_value(client, "b", "arr", value=10, observed_at="2024-01-20T00:00:00Z")
    params = {"from": "2024-01-01T00:00:00Z", "to": "2024-04-01T00:00:00Z", "interval": "month"}
    total = await series(client, **params, agg="snapshot_sum")
    assert [(p["value"], p["count"]) for p in total["data"]] == [(110, 2), (150, 2), (170, 2)]
    people = await series(client, **params, agg="snapshot_count")
    assert [p["value"] for p in people["data"]] == [2, 2, 2]
    average = await series(client, **params, agg="snapshot_avg")
    assert [p["value"] for p in average["data"]] == [55, 75, 85]
    before = await series(
        client,
        **{"from": "2023-11-01T00:00:00Z", "to": "2024-01-01T00:00:00Z", "interval": "month"},
        agg="snapshot_sum",
    )
    assert [(p["value"], p["count"]) for p in before["data"]] == [(None, 0), (None, 0)]


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"to": "2024-01-02T00:00:00Z"}, ["query", "from"]),
        ({"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, ["query", "to"]),
        (
            {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z", "tz": "Mars/Olympus"},
            ["query", "tz"],
        ),
        (
            {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z", "interval": "year"},
            ["query", "interval"],
        ),
        (
            {"from": "2024-01-01T00:00:00Z", "to": "2024-03-01T00:00:00Z", "interval": "hour"},
            ["query", "interval"],
        ),
        (
            {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z", "agg": "median"},
            ["query", "agg"],
        ),
        ({"from": "2024-01-01", "to": "2024-01-02T00:00:00Z"}, ["query", "from"]),
    ],
)
async def test_bad_series_requests_are_422(client, params, loc):
    await create_metric(client, name="ARR")
    response = await client.get(URL.format(ref="arr"), params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc


async def test_numeric_aggregates_need_a_numeric_metric(client):
    await create_metric(client, name="Plan", data_type="STRING")
    await write_value(client, "a", "plan", value="pro", observed_at="2024-01-01T00:00:00Z")
    params = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"}
    assert (
        await client.get(URL.format(ref="plan"), params={**params, "agg": "sum"})
    ).status_code == 422
    body = await series(client, "plan", **params, agg="count")
    assert body["data"][0]["value"] == 1


async def test_unknown_customer_filter_is_404(client):
    await create_metric(client, name="ARR")
    params = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z", "customer_id": "ghost"}
    assert (await client.get(URL.format(ref="arr"), params=params)).status_code == 404
